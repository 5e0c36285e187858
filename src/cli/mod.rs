//! Subcommands of the `cads` binary, one file each. Their stdout goes through [`out!`], never
//! `println!`, so a closed pipe ends the process quietly.

/// `println!` for the subcommands, through [`say`]: a broken pipe exits quietly with status 0.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::say(format_args!($($arg)*))
    };
}

pub mod bench;
pub mod check;
pub mod convert;
pub mod demo;
pub mod dist;
pub mod drr;
pub mod info;
pub mod inspect;
pub mod precision;
pub mod pretrain;
pub mod segment;
pub mod segment_infer;
pub mod vector_width;

/// Print one line to stdout. A closed pipe (`cads inspect FILE | head -c 20`) ends the process
/// quietly with status 0, as other command-line tools do; `println!` panicked there (exit 101).
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}") {
        exit_on_stdout_error(e);
    }
}

/// A write to stdout failed: a broken pipe exits quietly (status 0), anything else is an error.
pub fn exit_on_stdout_error(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to stdout: {e}");
    std::process::exit(1);
}
