// The Android library as a stand-alone Gradle build (android/ is the root
// project). To use it from an app's build instead, include it there:
//   include(":recurrent-depth"); project(":recurrent-depth").projectDir = file("<repo>/android")
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositories {
        google()
        mavenCentral()
    }
}
rootProject.name = "recurrent-depth"
