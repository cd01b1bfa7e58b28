// Android library (AAR) of recurrent-depth: the Kotlin API (src/main/kotlin),
// the JNI classes (src/main/java) and the JNI bridge (src/main/cpp), which
// CMake links per ABI with the Rust static library that build-native.sh makes
// with cargo-ndk. Run ./build-native.sh --aar, or ./build-native.sh and then
// `gradle assembleRelease`. Tested versions and steps: docs/android.md.
import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.library") version "8.7.3"
    id("org.jetbrains.kotlin.android") version "2.0.21"
}

android {
    namespace = "dev.recurrentdepth"
    compileSdk = 35
    // r27+ knows ANDROID_SUPPORT_FLEXIBLE_PAGE_SIZES (16 KB pages); use the
    // same NDK as build-native.sh (ANDROID_NDK_HOME).
    ndkVersion = "27.2.12479018"

    defaultConfig {
        minSdk = 28
        consumerProguardFiles("consumer-rules.pro")
        ndk {
            abiFilters += listOf("arm64-v8a", "armeabi-v7a", "x86_64")
        }
        externalNativeBuild {
            cmake {
                // ggml inside the static library is C++: ship libc++_shared.so.
                arguments += listOf("-DANDROID_STL=c++_shared", "-DANDROID_SUPPORT_FLEXIBLE_PAGE_SIZES=ON")
            }
        }
    }

    externalNativeBuild {
        cmake {
            path = file("src/main/cpp/CMakeLists.txt")
            version = "3.22.1"
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    // Flow is part of the public API.
    api("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.9.0")
}
