//! Prints the coverage of avscap.sys over a test run: the drivers of the
//! harness tests write what they executed to `$AVSCAP_EMU_COVERAGE_DIR`
//! (or the directory given as the only argument); this reads it against
//! the linker map, prints the figures and the kernel-shell functions never
//! executed, then any `cost.txt` a test left there (tests/cost.rs's
//! instruction counts). Exits non-zero when the kernel shell is below
//! 90% or the directory holds no coverage.

use std::path::PathBuf;
use std::process::ExitCode;

use avscap_kernel_emu::coverage::{report, DIR_ENV, SHELL_MINIMUM_PERCENT};
use avscap_kernel_emu::session::read_sys;
use avscap_kernel_emu::symbols::Symbols;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os(DIR_ENV))
        .map(PathBuf::from)
    else {
        eprintln!("usage: coverage_report DIR (or set {DIR_ENV})");
        return ExitCode::from(2);
    };
    let symbols = match read_sys().and_then(|sys| Symbols::load_default(&sys)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("coverage_report: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = match report(&dir, &symbols) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("coverage_report: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{r}");
    if let Ok(table) = std::fs::read_to_string(dir.join("cost.txt")) {
        println!();
        print!("{table}");
    }
    if r.runs == 0 {
        eprintln!(
            "coverage_report: no coverage file in {} (were the tests run with {DIR_ENV} set?)",
            dir.display()
        );
        return ExitCode::FAILURE;
    }
    if r.shell.percent() < SHELL_MINIMUM_PERCENT {
        eprintln!(
            "coverage_report: the kernel shell is below {SHELL_MINIMUM_PERCENT}% ({} functions executed)",
            r.shell
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
