/* The ggml headers ggml-sys binds (bindgen input; see build.rs). */
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gguf.h"
#include "ggml-vulkan.h"
#include "ggml-metal.h"
