//! The `batch-triage` command: argument parsing, then hand-off to one module per subcommand.
//! Everything that decides anything lives in the library crates; this binary only wires them to a
//! terminal.

mod demo;
mod diagnose;
mod emulator;
mod explain;
mod notify;
mod policy;
mod preserve;
mod render;
mod report;
mod serve;
mod silence;
mod sweep;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Explains Azure Batch job and task failures, keeps their logs, and tells people.
#[derive(Debug, Parser)]
#[command(name = "batch-triage", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole product locally with no Azure account: the Batch emulator with a failure of
    /// every class, the real pipeline, loopback Teams/email/webhook receivers, and an HTML report.
    #[command(after_help = demo::EXAMPLES)]
    Demo(demo::Args),

    /// Diagnose Batch payloads: task or job JSON, list responses, prep/release status,
    /// diagnostic-log events (alone, in an Event Hubs `records` batch or as JSON Lines), Event Grid
    /// events and CloudEvents.
    #[command(after_help = diagnose::EXAMPLES)]
    Diagnose(diagnose::Args),

    /// Serve the local Batch REST emulator (well-known account devbatch1), for trying batch-triage
    /// and the official SDKs with no Azure account.
    #[command(after_help = emulator::EXAMPLES)]
    Emulator(emulator::Args),

    /// Explain a job or task live from its Batch account: class, cause, hints, exit meaning,
    /// exitConditions impact, prep/release per node, and the end of the task's stderr.
    #[command(after_help = explain::EXAMPLES)]
    Explain(explain::Args),

    /// Send a sample alert to one receiver of the policy (Teams, email, ACS email or webhook) to
    /// check its configuration.
    #[command(after_help = notify::EXAMPLES)]
    Notify(notify::Args),

    /// Check a policy file (rules, receivers, grouping, silences, job actions) and show what it
    /// would do with sample failures.
    #[command(after_help = policy::EXAMPLES)]
    Policy(policy::Args),

    /// Copy the logs of a job's failed tasks (or one task) and its prep/release output into a
    /// directory or a blob container, before the nodes that hold them go away.
    #[command(after_help = preserve::EXAMPLES)]
    Preserve(preserve::Args),

    /// Report what the store holds over a window: failures by class, job and hour with their
    /// causes, hints and logs, alerts sent, muted or queued, job actions, silences; on the
    /// console, as JSON, or as a self-contained HTML page.
    #[command(after_help = report::EXAMPLES)]
    Report(report::Args),

    /// Serve the pipeline over HTTP: an Event Grid / CloudEvents webhook (with both validation
    /// handshakes), diagnostic-log records, the sweep and on-demand diagnosis, behind a shared key.
    #[command(after_help = serve::EXAMPLES)]
    Serve(serve::Args),

    /// Mute alerts from the command line, for every instance at once: silences kept in the
    /// store (BATCH_TRIAGE_STORE), listed with what they muted, and ended early.
    #[command(after_help = silence::EXAMPLES)]
    Silence(silence::Args),

    /// Sweep for failures no event announced (failed tasks since the store's cursor, ended and
    /// stuck jobs, prep failures), send due alert groups and retry the outbox; once or repeatedly.
    #[command(after_help = sweep::EXAMPLES)]
    Sweep(sweep::Args),
}

/// The async runtime for subcommands that do I/O; built only when one runs, so `diagnose` starts
/// instantly.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A closed stdout (`batch-triage … | head -2`) ends the command quietly with success, as it
/// does for other command-line tools, in one place for every subcommand. Rust ignores SIGPIPE,
/// so a write to a closed pipe fails instead of killing the process: `println!` then panics with
/// "failed printing to stdout: Broken pipe", and `write!` returns the error. The first is caught
/// here by a panic hook, the second in [`main`]. (Resetting SIGPIPE would need `unsafe`.)
fn end_quietly_on_broken_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // Only stdout: a server (`serve`, `emulator`) logs to stderr from its workers, and a
        // closed stderr must not end the service as a closed stdout ends a listing.
        let printing = message.starts_with("failed printing to stdout");
        // EPIPE is 32 on Linux and macOS; the text is strerror's.
        if printing && (message.contains("Broken pipe") || message.contains("(os error 32)")) {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}

/// Whether an error comes from writing to a closed pipe.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    end_quietly_on_broken_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Diagnose(args) => diagnose::run(&args),
        Command::Emulator(args) => emulator::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Notify(args) => notify::run(&args),
        Command::Policy(args) => policy::run(&args),
        Command::Preserve(args) => preserve::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Silence(args) => silence::run(&args),
        Command::Sweep(args) => sweep::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, no backtrace: the error chain joined, as a person reads it.
            eprintln!("batch-triage: {error:#}");
            ExitCode::from(2)
        }
    }
}
