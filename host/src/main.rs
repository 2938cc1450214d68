//! The `weft` binary: see [`weft_host::cli`].

/// See the workspace Cargo.toml for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in the `mi_option_e` of mimalloc 3 as
/// libmimalloc-sys 0.1.49 builds it (the sys crate names only the options
/// whose numbers mimalloc 2 and 3 share; the version is pinned for this).
#[cfg(target_os = "linux")]
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// By default mimalloc commits its arenas eagerly on Linux, so what a host
/// frees stays resident: 12 MB more for an idle `weft serve`, and a
/// parameter server that keeps every step's buffers. Committed on demand,
/// freed pages are purged. This must run before the first allocation
/// (which reserves the first arena), hence a constructor, not `main`; it
/// sets the default only, so `MIMALLOC_ARENA_EAGER_COMMIT` still wins.
#[cfg(target_os = "linux")]
extern "C" fn commit_arenas_on_demand() {
    // SAFETY: sets an integer option's default; allocates nothing.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static COMMIT_ARENAS_ON_DEMAND: extern "C" fn() = commit_arenas_on_demand;

fn main() -> std::process::ExitCode {
    weft_host::cli::main()
}
