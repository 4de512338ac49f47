use std::process::ExitCode;

use clap::Parser;

use tc_ami::cli::{self, Cli};
use tc_ami::commands::{Ctx, Outcome};
use tc_ami::interrupt::Cancel;
use tc_ami::shell::Shell;
use tc_ami::text::one_line;

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
            Shell::default().error(&format!("error: {first}; see tc-ami --help"));
            return ExitCode::from(1);
        }
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
    let outcome = runtime.block_on(async {
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
    });
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
