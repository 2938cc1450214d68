//! The `weft` command line, built inside this package so integration tests
//! can run it as a process (`CARGO_BIN_EXE_weft-under-test`).

fn main() -> std::process::ExitCode {
    weft_host::cli::main()
}
