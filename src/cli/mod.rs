//! Command-line definitions. Every server option can also come from a
//! `COURIER_*` environment variable.

pub mod client;
pub mod config;
pub mod logging;
#[cfg(feature = "otlp")]
pub mod otel;
pub mod server;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "courier",
    version,
    about = "A durable task runtime: servers and client commands"
)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `courier_actors=debug`.
    #[arg(long, env = "COURIER_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log lines as `text` (colour only on a terminal, and not with `NO_COLOR`)
    /// or `json` (one object a line). Either way a place in the code writes at
    /// most 10 lines a minute at `info` and above, then one line with the count.
    #[arg(
        long,
        env = "COURIER_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: logging::LogFormat,
    /// Export spans over OTLP/HTTP (JSON) to this collector base URL
    /// (`http://collector:4318`; traces go to `…/v1/traces`): one trace a
    /// task across every process that touched it (feature `otlp`).
    #[arg(long, env = "COURIER_OTLP", global = true, value_name = "URL")]
    pub otlp: Option<String>,
    /// A TOML file of options (keys are long options: `db = "…"`, `queues = ["a", "b"]`).
    /// The command line wins over `COURIER_*` variables, which win over this file.
    #[arg(long, env = "COURIER_CONFIG", global = true, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Web front end and executor in one process (SQLite and the in-process bus by default).
    Serve(ServeArgs),
    /// An executor only: claims and runs tasks.
    Executor(ExecutorArgs),
    /// The web front end only: API, dashboard, metrics.
    Web(WebArgs),
    /// Apply the database migrations and exit.
    Migrate(DbArgs),
    /// Create a task: `courier submit demo.echo '{"a":1}' --wait`.
    Submit(SubmitArgs),
    /// List tasks, newest first.
    Tasks(TasksArgs),
    /// Show one task with its history, events and sub-tasks.
    Show(IdArgs),
    /// Send an event to a task: `courier event ID booted '{"ip":"10.0.0.5"}'`.
    Event(EventArgs),
    /// Request cancellation of a task (and its sub-tasks).
    Cancel(IdArgs),
    /// List the queues: their limits and how many tasks wait and run.
    Queues(ListArgs),
    /// Show a queue, or change its limits: `courier queue mail --concurrency 4 --rate 10 --pause`.
    Queue(QueueArgs),
    /// List the schedules (recurring tasks) with their next slots.
    Schedules(ListArgs),
    /// Create or replace a schedule: `courier schedule nightly '0 3 * * *' demo.echo '{"x":1}' --catch-up one`.
    Schedule(ScheduleArgs),
    /// Delete a schedule (the tasks it created stay).
    Unschedule(NameArgs),
    /// Print a shell completion script: `courier completions bash > /etc/bash_completion.d/courier`.
    Completions(CompletionsArgs),
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// `sqlite://PATH` (created if missing) or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "COURIER_DB", default_value = "sqlite://courier.db")]
    pub db: String,
}

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Transports, comma-separated: `local` (in-process, always on),
    /// `socket:DIR` (processes on one host), `amqp://USER:PASS@HOST:PORT/VHOST`
    /// (hosts through RabbitMQ) and `postgres` (hosts through the `--db`
    /// PostgreSQL database, no broker); the nearest route wins.
    #[arg(
        long,
        env = "COURIER_BUS",
        default_value = "local",
        value_delimiter = ','
    )]
    pub bus: Vec<BusTransport>,
    /// This node's name in bus addresses (default: `<host>-<pid>`).
    #[arg(long, env = "COURIER_NODE")]
    pub node: Option<String>,
    /// Prefix of the AMQP exchanges and queues (one deployment per prefix).
    #[arg(long, env = "COURIER_AMQP_PREFIX", default_value = "courier")]
    pub amqp_prefix: String,
}

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// Register the demo task kinds (demo.echo, demo.sleep, demo.fail, demo.await_event, demo.fanout, demo.provision, …): for trying courier out, not for untrusted callers.
    #[arg(long, env = "COURIER_DEMO")]
    pub demo: bool,
    /// The directory the demo kinds may write a task's `log` in (off by default: a `log` fails the task).
    #[arg(long, env = "COURIER_DEMO_LOG_DIR", value_name = "DIR")]
    pub demo_log_dir: Option<std::path::PathBuf>,
    /// Tasks this executor runs at once.
    #[arg(long, env = "COURIER_CAPACITY", default_value_t = 256)]
    pub capacity: u32,
    /// Run only these of the registered kinds (comma-separated).
    #[arg(long, env = "COURIER_KINDS", value_delimiter = ',', value_parser = kind_name)]
    pub kinds: Option<Vec<String>>,
    /// How often the executor records that it is alive (default 2000).
    #[arg(long, env = "COURIER_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// An executor silent this long is declared dead and its tasks taken over (default 8000).
    #[arg(long, env = "COURIER_DEAD_AFTER_MS")]
    pub dead_after_ms: Option<u64>,
    /// Fail a task after its executor died this many times while running it (a poison task).
    #[arg(long, env = "COURIER_MAX_TAKEOVERS", default_value_t = 5)]
    pub max_takeovers: u32,
    /// The queues this executor serves (comma-separated).
    #[arg(
        long,
        env = "COURIER_QUEUES",
        default_value = "default",
        value_delimiter = ','
    )]
    pub queues: Vec<String>,
    /// How long finished tasks are kept, per final state, and the row of a dead or stopped executor (units s, m, h, d; 0 keeps forever).
    #[arg(
        long,
        env = "COURIER_RETAIN",
        default_value = "succeeded=7d,cancelled=7d,failed=30d,executors=7d"
    )]
    pub retain: courier::Retention,
}

/// One transport named by `--bus`.
#[derive(Debug, Clone, PartialEq)]
pub enum BusTransport {
    /// In-process (always on; naming it changes nothing).
    Local,
    /// Processes on one host, through Unix sockets in this directory.
    Socket(std::path::PathBuf),
    /// Hosts, through RabbitMQ at this URL.
    Amqp(String),
    /// Hosts, through the `--db` PostgreSQL database.
    Postgres,
}

impl std::str::FromStr for BusTransport {
    type Err = String;

    fn from_str(t: &str) -> Result<Self, String> {
        let t = t.trim();
        match t {
            "local" => Ok(BusTransport::Local),
            "postgres" => Ok(BusTransport::Postgres),
            _ if t.starts_with("socket:") => match &t["socket:".len()..] {
                "" => Err("the socket transport needs a directory: socket:DIR".into()),
                dir => Ok(BusTransport::Socket(dir.into())),
            },
            _ if t.starts_with("amqp://") || t.starts_with("amqps://") => {
                Ok(BusTransport::Amqp(t.to_string()))
            }
            _ => Err(format!(
                "unknown transport {t:?}: expected local, socket:DIR, amqp://… or postgres"
            )),
        }
    }
}

/// One name of `--kinds`, trimmed.
fn kind_name(k: &str) -> Result<String, String> {
    match k.trim() {
        "" => Err("an empty kind name".into()),
        k => Ok(k.to_string()),
    }
}

#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    /// Address to listen on.
    #[arg(long, env = "COURIER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Require `Authorization: Bearer TOKEN` on the API.
    #[arg(long, env = "COURIER_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// A file of accepted tokens, one per line (`#` starts a comment); one
    /// that holds no token is an error.
    #[arg(long, env = "COURIER_API_TOKEN_FILE")]
    pub api_token_file: Option<std::path::PathBuf>,
    /// Serve the API without a token on an address that is not loopback
    /// (refused otherwise: anyone who reaches the port could run tasks).
    #[arg(long, env = "COURIER_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Largest request body in bytes.
    #[arg(long, env = "COURIER_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Largest `wait_ms` a request may ask for.
    #[arg(long, env = "COURIER_MAX_WAIT_MS", default_value_t = 60_000)]
    pub max_wait_ms: u64,
    /// HTTP worker threads.
    #[arg(long, env = "COURIER_WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// Connections served at once (all workers together); past it, new
    /// connections wait in the kernel's accept queue.
    #[arg(long, env = "COURIER_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub exec: ExecArgs,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Args, Debug)]
pub struct ExecutorArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Serve `/metrics` and `/healthz` (no API, no dashboard) on this
    /// address, so Prometheus can scrape an executor's own counters: its
    /// runs, retries, takeovers, fenced writes, run durations.
    #[arg(long, env = "COURIER_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

#[derive(Args, Debug)]
pub struct WebArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The courier server's base URL.
    #[arg(
        long,
        env = "COURIER_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Bearer token for the API.
    #[arg(long, env = "COURIER_API_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of readable text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Task kind, e.g. demo.echo.
    pub kind: String,
    /// Input as JSON (default null).
    pub input: Option<String>,
    /// Wait for the task to finish (up to --wait-ms).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub wait_ms: u64,
    /// Create at most one task for this key.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Start no sooner than this time (RFC 3339, e.g. 2026-12-24T18:00:00Z).
    #[arg(long, conflicts_with = "delay")]
    pub run_at: Option<String>,
    #[command(flatten)]
    pub options: TaskOptionArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The queue options of a task, as flags (`submit`, `schedule`).
#[derive(Args, Debug, Clone)]
pub struct TaskOptionArgs {
    /// The queue to run from (default: the kind's, else `default`).
    #[arg(long)]
    pub queue: Option<String>,
    /// Priority within the queue, -100 to 100 (higher starts first).
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<i32>,
    /// Start no sooner than this from now (a schedule: from its slot): `500ms`, `30s`, `2h`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<std::time::Duration>,
    /// Attempts allowed, 1 to 100: a failed attempt with attempts left is retried.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// The base of the retry backoff (`1s` by default; retry n waits 50-100 % of base × 2^(n-1), at most 1 h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub backoff: Option<std::time::Duration>,
    /// An attempt running longer is aborted and fails with code `timeout`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// The schedule's name (a-z, 0-9, `_`, `.`, `-`).
    pub name: String,
    /// Cron expression, UTC: 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first. Quote it.
    pub cron: String,
    /// Task kind each slot creates.
    pub kind: String,
    /// Input of each task, as JSON (default null).
    pub input: Option<String>,
    /// Slots missed while no process ran: `skip` (none), `one` (one task for all) or `all` (one each, at most 100).
    #[arg(long, default_value = "skip")]
    pub catch_up: String,
    /// Save it disabled (no slot fires until it is saved enabled).
    #[arg(long)]
    pub disabled: bool,
    #[command(flatten)]
    pub options: TaskOptionArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct QueueArgs {
    /// The queue's name.
    pub name: String,
    /// At most this many of its tasks run at once in the whole deployment (`none` lifts it).
    #[arg(long)]
    pub concurrency: Option<Limit<u32>>,
    /// At most this many starts per second in the whole deployment (`none` lifts it).
    #[arg(long)]
    pub rate: Option<Limit<f64>>,
    /// Stop every new start of its tasks (running ones go on).
    #[arg(long, conflicts_with = "resume")]
    pub pause: bool,
    /// Let its tasks start again.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A limit on the command line: a value, or `none` to lift it.
#[derive(Clone, Debug, PartialEq)]
pub enum Limit<T> {
    Set(T),
    Lift,
}

impl<T: std::str::FromStr> std::str::FromStr for Limit<T>
where
    T::Err: std::fmt::Display,
{
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("none") {
            return Ok(Limit::Lift);
        }
        s.parse()
            .map(Limit::Set)
            .map_err(|e| format!("{e} (give a number, or none to lift the limit)"))
    }
}

#[derive(Args, Debug)]
pub struct TasksArgs {
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub queue: Option<String>,
    /// Only tasks created by this schedule.
    #[arg(long)]
    pub schedule: Option<String>,
    #[arg(long)]
    pub parent: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Page after this task id.
    #[arg(long)]
    pub after: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct IdArgs {
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct EventArgs {
    pub id: String,
    pub name: String,
    /// Payload as JSON (default null).
    pub payload: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn init_logging(args: &Cli) -> Result<(), String> {
    let command = match &args.command {
        Command::Serve(_) => "serve",
        Command::Executor(_) => "executor",
        Command::Web(_) => "web",
        _ => "client",
    };
    let otlp = args.otlp.as_deref().map(|url| (url, command));
    logging::init(&args.log, args.log_format, otlp)
}

pub async fn run(args: Cli) -> anyhow::Result<()> {
    match args.command {
        Command::Serve(a) => server::serve(a).await,
        Command::Executor(a) => server::executor(a).await,
        Command::Web(a) => server::web(a).await,
        Command::Migrate(a) => server::migrate(a).await,
        Command::Submit(a) => client::submit(a).await,
        Command::Tasks(a) => client::tasks(a).await,
        Command::Show(a) => client::show(a).await,
        Command::Event(a) => client::event(a).await,
        Command::Cancel(a) => client::cancel(a).await,
        Command::Queues(a) => client::queues(a).await,
        Command::Queue(a) => client::queue(a).await,
        Command::Schedules(a) => client::schedules(a).await,
        Command::Schedule(a) => client::schedule(a).await,
        Command::Unschedule(a) => client::unschedule(a).await,
        Command::Completions(a) => {
            use clap::CommandFactory;
            clap_complete::generate(
                a.shell,
                &mut Cli::command(),
                "courier",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}
