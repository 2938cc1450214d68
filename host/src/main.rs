//! The `weft` binary: see [`weft_host::cli`].

fn main() -> std::process::ExitCode {
    weft_host::cli::main()
}
