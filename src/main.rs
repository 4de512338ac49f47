use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::Parser;

use tc_ami::cli::{self, Cli};
use tc_ami::commands::{Ctx, Outcome};
use tc_ami::interrupt::Cancel;
use tc_ami::shell::Shell;
use tc_ami::text::one_line;

/// The command line, or the exit code of `--help`, `--version` or a usage error. Usage errors
/// exit 1, not clap's 2: for `diff`, 2 means "there are changes".
fn parse() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            Err(ExitCode::from(0))
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            Err(ExitCode::from(1))
        }
        Err(e) => {
            // One line: clap's first line, without its "error: " and usage block.
            let rendered = e.render().to_string();
            let first: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = first.join(" ");
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            Shell::default().error(&format!("error: {first}; see tc-ami --help"));
            Err(ExitCode::from(1))
        }
    }
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let shell = Shell::new(cli.json, cli.verbose);
    shell.init_logging();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            shell.error(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    catch_panics();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            let cancel = Cancel::new();
            if let Err(e) = cancel.install_signal_handlers(shell) {
                return Outcome::Failed(anyhow::anyhow!("cannot listen for Ctrl-C: {e}"));
            }
            let ctx = Ctx {
                config_dir: cli.config_dir.clone(),
                shell,
                cancel,
            };
            cli::run(&ctx, cli.command).await
        })
    }));
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(_) => {
            // What tc-ami had created was removed on the way out (registered cleanups run on
            // unwind); what could not be was logged as LEFT BEHIND.
            let what = PANIC
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| "a panic".to_string());
            shell.error(&format!(
                "error: internal error, a bug in tc-ami (please report it): {}",
                one_line(&what)
            ));
            return ExitCode::from(101);
        }
    };
    exit(shell, outcome)
}

/// The exit code of what the command came to, with its last line.
fn exit(shell: Shell, outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Done(code) => ExitCode::from(code),
        Outcome::Interrupted(i, message) => {
            shell.error(&message);
            ExitCode::from(i.exit_code() as u8)
        }
        Outcome::Failed(e) => {
            shell.error(&format!("error: {}", one_line(&format!("{e:#}"))));
            ExitCode::from(1)
        }
    }
}

/// The first panic's message and place, for the one-line error once it has unwound to `main`.
static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Panics are reported on one line by `main` after the unwinding has run the registered
/// cleanups, not by the default hook's lines; with RUST_BACKTRACE set, the default hook prints
/// them too.
fn catch_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let mut first = PANIC.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(format!("{message}{place}"));
        }
        drop(first);
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default_hook(info);
        }
    }));
}
