//! The `secured` binary: all logic lives in the library; see `secured::cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    secured::cli::main()
}
