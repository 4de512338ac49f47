use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use tc_ami::cli::Cli;
use tc_ami::commands::{self, Ctx, Outcome};
use tc_ami::interrupt::Cancel;

fn main() -> ExitCode {
    // Usage errors exit 1, not clap's 2: for `diff`, 2 means "there are changes".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(0);
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(1);
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
            eprintln!("tc-ami: error: {first}; see tc-ami --help");
            return ExitCode::from(1);
        }
    };
    let default_filter = match cli.verbose {
        0 => "warn",
        1 => "warn,tc_ami=debug",
        _ => "info,tc_ami=trace",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tc-ami: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        let cancel = Cancel::new();
        if let Err(e) = cancel.install_signal_handlers() {
            return Outcome::Failed(anyhow::anyhow!("cannot listen for Ctrl-C: {e}"));
        }
        let ctx = Ctx {
            config_dir: cli.config_dir.clone(),
            json: cli.json,
            cancel,
        };
        commands::run(&ctx, cli.command).await
    });
    match outcome {
        Outcome::Done(code) => ExitCode::from(code),
        Outcome::Interrupted(i, message) => {
            eprintln!("tc-ami: {message}");
            ExitCode::from(i.exit_code() as u8)
        }
        Outcome::Failed(e) => {
            eprintln!("tc-ami: error: {}", one_line(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
