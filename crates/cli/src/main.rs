//! The `vltava` command line: `vltava serve`, a single-node broker that needs no
//! configuration, `vltava cluster describe` (brokers and metadata quorum), `vltava group`, the
//! consumer group tool (list, describe, reset offsets, delete), and `vltava topic` (create, list,
//! describe, alter, delete), built on the native client.

mod bench;
mod cluster;
mod consume;
mod group;
mod produce;
mod reassign;
mod timestamp;
mod topic;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vltava_broker::{Broker, BrokerConfig};

#[derive(Parser, Debug)]
#[command(
    name = "vltava",
    version,
    about = "Vltava: a Kafka-compatible commit log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a broker (defaults: 127.0.0.1:9092, data in ./vltava-data, topics created on first use).
    Serve(Box<ServeArgs>),
    /// The cluster: its brokers and metadata quorum; leader elections.
    Cluster(cluster::ClusterArgs),
    /// Consumer groups: list, describe, reset offsets, delete.
    Group(group::GroupArgs),
    /// Topics: create, list, describe, alter, delete, reassign.
    Topic(topic::TopicArgs),
    /// Write lines from stdin or a file to a topic, one record per line.
    Produce(Box<produce::ProduceArgs>),
    /// Benchmarks: `vltava bench produce|consume|e2e`.
    Bench(Box<bench::BenchArgs>),
    /// Read a topic and print its records (as a group member with --group).
    Consume(Box<consume::ConsumeArgs>),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address clients are told to connect to (defaults to the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML file of settings under Kafka's names.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set one setting, e.g. --set num.partitions=3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// This node's id in the cluster (node.id).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// broker,controller (default), broker or controller (process.roles).
    #[arg(long, value_name = "ROLES")]
    process_roles: Option<String>,
    /// The cluster this node belongs to (cluster.id); a data directory of another is refused.
    #[arg(long, value_name = "ID")]
    cluster_id: Option<String>,
    /// The controller voters, ID@HOST:PORT,... (controller.quorum.voters; also
    /// --controller-quorum).
    #[arg(long, alias = "controller-quorum", value_name = "ID@HOST:PORT,...")]
    controller_quorum_voters: Option<String>,
    /// Controllers a joining node asks first, HOST:PORT,... (controller.quorum.bootstrap.servers).
    #[arg(long, value_name = "HOST:PORT,...")]
    controller_quorum_bootstrap_servers: Option<String>,
    /// Address of this node's metadata listener, HOST:PORT (controller.listen).
    #[arg(long, value_name = "HOST:PORT")]
    controller_listen: Option<String>,
    /// This broker's rack, for rack-aware replica placement (broker.rack).
    #[arg(long, value_name = "RACK")]
    rack: Option<String>,
    /// The HTTP listener (health, /metrics), HOST:PORT or none (http.listen; default
    /// 127.0.0.1:8092).
    #[arg(long, value_name = "HOST:PORT")]
    http_listen: Option<String>,
    /// The web console without its actions: pages only, every POST refused (http.read.only).
    #[arg(long)]
    http_read_only: bool,
    /// Log lines as text or json (log.format).
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
}

fn build_config(args: &ServeArgs) -> Result<BrokerConfig, String> {
    let mut config = BrokerConfig::default();
    if let Some(path) = &args.config {
        config.load_toml(path).map_err(|e| e.to_string())?;
    }
    config
        .load_env(std::env::vars())
        .map_err(|e| format!("environment: {e}"))?;
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--set expects KEY=VALUE, got '{kv}'"))?;
        config.set(k, v).map_err(|e| e.to_string())?;
    }
    if let Some(l) = &args.listen {
        config.set("listen", l).map_err(|e| e.to_string())?;
    }
    if let Some(a) = &args.advertised_listener {
        config
            .set("advertised.listener", a)
            .map_err(|e| e.to_string())?;
    }
    let flags = [
        ("node.id", &args.node_id),
        ("process.roles", &args.process_roles),
        ("cluster.id", &args.cluster_id),
        ("controller.quorum.voters", &args.controller_quorum_voters),
        (
            "controller.quorum.bootstrap.servers",
            &args.controller_quorum_bootstrap_servers,
        ),
        ("controller.listen", &args.controller_listen),
        ("broker.rack", &args.rack),
        ("http.listen", &args.http_listen),
        ("log.format", &args.log_format),
    ];
    for (name, value) in flags {
        if let Some(v) = value {
            config.set(name, v).map_err(|e| e.to_string())?;
        }
    }
    if args.http_read_only {
        config
            .set("http.read.only", "true")
            .map_err(|e| e.to_string())?;
    }
    if let Some(d) = &args.data_dir {
        config
            .set("data.dir", &d.display().to_string())
            .map_err(|e| e.to_string())?;
    }
    Ok(config)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help and version go to stdout with success; real usage errors get one line.
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("{}", usage_error_line(&e));
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Cluster(args) => client_command(cluster::run(args)),
        Command::Group(args) => client_command(group::run(args)),
        Command::Topic(args) => client_command(topic::run(args)),
        Command::Produce(args) => produce::main(*args),
        Command::Bench(args) => bench::main(*args),
        Command::Consume(args) => client_command(consume::run(*args)),
    }
}

/// Logs to stderr as `log.format` says; `RUST_LOG` filters (default info).
fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        // One JSON object per line: timestamp, level, target, message and the event's fields.
        builder.json().flatten_event(true).init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// clap's error in one line: its first line, plus the indented items a first line ending in ':'
/// announces (e.g. which required arguments are missing); a missing subcommand names the usage.
fn usage_error_line(e: &clap::Error) -> String {
    let msg = e.to_string();
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let usage = msg
            .lines()
            .find_map(|l| l.strip_prefix("Usage: "))
            .unwrap_or("vltava <COMMAND>");
        return format!("error: a subcommand is required; usage: {usage}");
    }
    let mut lines = msg.lines();
    let mut first = lines.next().unwrap_or("invalid arguments").to_string();
    if first.ends_with(':') {
        let items: Vec<&str> = lines
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        if !items.is_empty() {
            first.push(' ');
            first.push_str(&items.join(", "));
        }
    }
    first
}

/// Runs a client command on a single-threaded runtime: exit 0, or one `error: ...` line on
/// stderr and exit 1.
fn client_command(
    command: impl std::future::Future<Output = Result<(), group::Failure>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(group::Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    // Read once to learn log.format before logging starts, then again with logging on, so that
    // what reading the settings logs (ignored VLTAVA_ variables) is written in that format.
    let format = match build_config(&args) {
        Ok(c) => c.log_format().to_string(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&format);
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if !config.is_broker() {
        return runtime.block_on(serve_controller(config));
    }
    runtime.block_on(async move {
        let broker = match Broker::start(config).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        wait_for_signal().await;
        tracing::info!("shutting down");
        match broker.shutdown().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: shutdown: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// `process.roles=controller`: a member of the metadata quorum only.
async fn serve_controller(config: BrokerConfig) -> ExitCode {
    let node = match vltava_broker::ControllerNode::start(&config).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    wait_for_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the broker still runs; it can be killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn move_commands_parse() {
        let ok = |argv: &[&str]| {
            Cli::try_parse_from(std::iter::once("vltava").chain(argv.iter().copied()))
                .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        };
        ok(&[
            "topic",
            "reassign",
            "t",
            "--partition",
            "0",
            "--partition",
            "1",
            "--replicas",
            "2,3,4",
            "--wait",
            "60",
        ]);
        ok(&["topic", "reassign", "t", "--partition", "0", "--cancel"]);
        ok(&["topic", "reassignments", "--json"]);
        ok(&["cluster", "elect-leaders"]);
        ok(&[
            "cluster",
            "elect-leaders",
            "--topic",
            "t",
            "--partition",
            "2",
            "--unclean",
        ]);
        let bad = |argv: &[&str]| {
            assert!(
                Cli::try_parse_from(std::iter::once("vltava").chain(argv.iter().copied())).is_err(),
                "{argv:?}"
            )
        };
        bad(&["topic", "reassign", "t", "--partition", "0"]);
        bad(&["topic", "reassign", "t", "--replicas", "1,2"]);
        bad(&[
            "topic",
            "reassign",
            "t",
            "--partition",
            "0",
            "--replicas",
            "1,2",
            "--cancel",
        ]);
        bad(&[
            "topic",
            "reassign",
            "t",
            "--partition",
            "0",
            "--replicas",
            "x",
        ]);
        bad(&["cluster", "elect-leaders", "--partition", "1"]);
    }
}
