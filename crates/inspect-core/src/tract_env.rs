//! tract's process-wide environment, set before its first use. Imports nothing of the project,
//! so any module that touches tract (the bundle loader, the engine, the extractor builder) can
//! call it without importing the others.

/// Keeps tract away from kernels known to fail on this machine's kind of CPU: tract 0.23.9's
/// AMX int8 matmul (x86_64, Sapphire Rapids and later) now and then dies with SIGSEGV inside
/// `avx512amx_mmm_i32_8x8` (1 run in 6 of the int8 extractor test here), so the VNNI int8
/// kernels are used instead (`TRACT_CPU_ISA=-amx-int8`). An explicit `TRACT_CPU_ISA` is left
/// alone. tract reads it once per process: call this before its first use (the binaries do it
/// first thing; the engine and the bundle loader do it too).
pub fn avoid_faulty_kernels() {
    #[cfg(target_arch = "x86_64")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("TRACT_CPU_ISA").is_none() {
                // Only x86_64: tract refuses a token of another architecture.
                std::env::set_var("TRACT_CPU_ISA", "-amx-int8");
            }
        });
    }
}
