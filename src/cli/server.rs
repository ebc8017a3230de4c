//! The server commands.

use std::net::TcpListener;
use std::time::Duration;

use anyhow::{bail, Context};

use courier::web::{server, WebConfig, WebState};
use courier::{ExecutorConfig, Registry, Runtime, RuntimeBuilder, Store};

use super::{BusTransport, DbArgs, ExecArgs, ExecutorArgs, HttpArgs, NodeArgs, ServeArgs, WebArgs};

fn builder(node: &NodeArgs, exec: Option<&ExecArgs>) -> anyhow::Result<RuntimeBuilder> {
    let mut b = Runtime::builder().database(node.db.db.clone());
    for transport in &node.bus {
        match transport {
            BusTransport::Local => {}
            BusTransport::Socket(dir) => b = b.socket_transport(dir.clone()),
            #[cfg(feature = "amqp")]
            BusTransport::Amqp(url) => {
                b = b.amqp_transport(courier::bus::transport::amqp::AmqpConfig {
                    url: url.clone(),
                    prefix: node.amqp_prefix.clone(),
                });
            }
            #[cfg(not(feature = "amqp"))]
            BusTransport::Amqp(url) => {
                bail!(
                    "--bus {url}: this build has no AMQP transport (build with the `amqp` feature)"
                )
            }
            BusTransport::Postgres => {
                if !node.db.db.starts_with("postgres") {
                    bail!(
                        "--bus postgres goes through the database: it needs --db postgres://…, not {}",
                        node.db.db
                    );
                }
                b = b.postgres_transport();
            }
        }
    }
    if let Some(n) = &node.node {
        b = b.node(n.clone());
    }
    match exec {
        Some(e) => {
            let mut registry = if e.demo {
                courier::demo::registry_with(courier::demo::DemoOptions {
                    log_dir: e.demo_log_dir.clone(),
                })
            } else {
                Registry::new()
            };
            if let Some(only) = &e.kinds {
                let wanted: Vec<&str> = only.iter().map(String::as_str).collect();
                for k in &wanted {
                    if !registry.contains(k) {
                        bail!(
                            "--kinds names {k:?}, which is not registered (registered: {})",
                            registry.names().join(", ")
                        );
                    }
                }
                registry = registry.only(&wanted);
            }
            if registry.is_empty() {
                tracing::warn!("no task kinds registered: this process runs no executor (use --demo, or embed courier to register your own kinds)");
            }
            b = b.registry(registry).executor(executor_config(e)?);
        }
        None => b = b.without_executor(),
    }
    Ok(b)
}

/// The executor's tuning from the command line. The sweep, which declares
/// silent executors dead, runs at least four times per `dead_after` (and at
/// most every 2 s), so a dead executor is taken over within about 1.25 ×
/// `dead_after`: 10 s with the defaults, under 4 s at the fastest.
fn executor_config(e: &ExecArgs) -> anyhow::Result<ExecutorConfig> {
    let defaults = ExecutorConfig::default();
    let heartbeat = e
        .heartbeat_ms
        .map_or(defaults.heartbeat_interval, Duration::from_millis);
    let dead_after = e
        .dead_after_ms
        .map_or(defaults.dead_after, Duration::from_millis);
    if heartbeat.is_zero() {
        bail!("--heartbeat-ms must be more than 0");
    }
    if dead_after < heartbeat * 3 {
        bail!(
            "--dead-after-ms ({} ms) must be at least three heartbeats (--heartbeat-ms {} ms): \
             a live executor that misses one heartbeat must not be declared dead",
            dead_after.as_millis(),
            heartbeat.as_millis()
        );
    }
    if e.max_takeovers == 0 {
        bail!("--max-takeovers must be at least 1");
    }
    let queues: Vec<String> = e
        .queues
        .iter()
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty())
        .collect();
    if queues.is_empty() {
        bail!("--queues names no queue: an executor serves at least one");
    }
    for q in &queues {
        courier::actors::validate_queue_name(q).map_err(|e| anyhow::anyhow!("--queues: {e}"))?;
    }
    Ok(ExecutorConfig {
        capacity: e.capacity,
        heartbeat_interval: heartbeat,
        dead_after,
        sweep_interval: defaults.sweep_interval.min(dead_after / 4),
        max_takeovers: e.max_takeovers,
        queues,
        retention: e.retain.clone(),
        ..defaults
    })
}

fn web_config(h: &HttpArgs) -> anyhow::Result<WebConfig> {
    let mut tokens = Vec::new();
    if let Some(t) = &h.api_token {
        tokens.push(t.trim().to_string());
    }
    if let Some(path) = &h.api_token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let before = tokens.len();
        tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
        if tokens.len() == before {
            // Read as "no authentication" it would open the API to anyone,
            // without a word, because of a file left empty by mistake.
            bail!(
                "the token file {} holds no token (one token per line; `#` starts a comment)",
                path.display()
            );
        }
    }
    if tokens.iter().any(|t| t.is_empty()) {
        bail!("an API token must not be empty");
    }
    Ok(WebConfig {
        body_limit: h.body_limit,
        max_wait: Duration::from_millis(h.max_wait_ms),
        tokens,
    })
}

/// Checks the HTTP settings and binds the listener before anything starts,
/// so a taken port or a bad token file fails fast.
fn prepare_http(h: &HttpArgs) -> anyhow::Result<(WebConfig, TcpListener)> {
    let config = web_config(h)?;
    let listener = TcpListener::bind(&h.listen).with_context(|| format!("binding {}", h.listen))?;
    let addr = listener.local_addr()?;
    protected_mode(&addr, !config.tokens.is_empty(), h.insecure_no_auth)?;
    Ok((config, listener))
}

/// Closed by default: an API reachable from other machines needs a token,
/// unless the operator says, by name, that it may run open.
fn protected_mode(addr: &std::net::SocketAddr, tokens: bool, insecure: bool) -> anyhow::Result<()> {
    if tokens || addr.ip().is_loopback() {
        return Ok(());
    }
    if insecure {
        tracing::warn!(%addr, "serving the API with no token on a non-loopback address (--insecure-no-auth): anyone who reaches it can create, cancel and read tasks");
        return Ok(());
    }
    bail!(
        "refusing to serve the API on {addr} without a token: anyone who reaches that address could run tasks. \
         Give --api-token or --api-token-file (COURIER_API_TOKEN, COURIER_API_TOKEN_FILE), listen on a loopback \
         address (127.0.0.1), or pass --insecure-no-auth to run it open on purpose"
    )
}

async fn run_http(
    rt: Runtime,
    config: WebConfig,
    listener: TcpListener,
    h: &HttpArgs,
    lease: courier::actors::workers::WorkerConfig,
) -> anyhow::Result<()> {
    let auth = !config.tokens.is_empty();
    let addr = listener.local_addr()?;
    let state = WebState::new(rt.client(), config).with_worker_lease(lease);
    let srv = match server::build(
        state.clone(),
        listener,
        h.workers,
        h.max_connections as usize,
    ) {
        Ok(s) => s,
        Err(e) => {
            rt.shutdown().await;
            return Err(e.into());
        }
    };
    server::stop_on_signals(state, &srv);
    // One line on stdout with the address actually bound (useful with
    // `--listen 127.0.0.1:0`), for operators and for scripts.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "courier listening on http://{addr}");
        let _ = out.flush();
    }
    tracing::info!(%addr, auth, executor = ?rt.executor_id(), "courier is serving; dashboard at http://{addr}/");
    // Runs until SIGTERM or SIGINT: then stops accepting, lets requests in
    // flight finish, and returns.
    srv.await?;
    tracing::info!("HTTP server stopped; handing running tasks back");
    rt.shutdown().await;
    Ok(())
}

pub async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let (config, listener) = prepare_http(&a.http)?;
    let exec = executor_config(&a.exec)?;
    // Workers keep the lease this process's executor keeps.
    let lease = courier::actors::workers::WorkerConfig {
        renew_every: exec.heartbeat_interval,
        dead_after: exec.dead_after,
    };
    let rt = builder(&a.node, Some(&a.exec))?.start().await?;
    run_http(rt, config, listener, &a.http, lease).await
}

pub async fn web(a: WebArgs) -> anyhow::Result<()> {
    let (config, listener) = prepare_http(&a.http)?;
    let rt = builder(&a.node, None)?.start().await?;
    run_http(rt, config, listener, &a.http, Default::default()).await
}

pub async fn executor(a: ExecutorArgs) -> anyhow::Result<()> {
    if !a.exec.demo {
        bail!("an executor needs task kinds: use --demo, or embed courier as a library and register your own");
    }
    let listener = match &a.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?),
        None => None,
    };
    let rt = builder(&a.node, Some(&a.exec))?.start().await?;
    let metrics = match listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let state = WebState::new(rt.client(), WebConfig::default());
            let srv = server::build_metrics(state, listener)?;
            tracing::info!(%addr, "serving /metrics and /healthz");
            let handle = srv.handle();
            actix_web::rt::spawn(srv);
            Some(handle)
        }
        None => None,
    };
    tracing::info!(executor = ?rt.executor_id(), "executor running; SIGTERM or Ctrl-C stops it cleanly");
    wait_for_stop_signal().await?;
    tracing::info!("stopping: handing running tasks back");
    rt.shutdown().await;
    if let Some(handle) = metrics {
        handle.stop(true).await;
    }
    Ok(())
}

pub async fn migrate(a: DbArgs) -> anyhow::Result<()> {
    let store = Store::connect(&a.db)
        .await
        .with_context(|| format!("migrating {}", a.db))?;
    store.close().await;
    println!("migrations applied to {}", a.db);
    Ok(())
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["courier", "serve"], args].concat())?;
        match cli.command {
            Command::Serve(a) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bus_names_transports_clap_splits_and_types() {
        let a = serve(&[
            "--bus",
            "local, socket:/run/courier,amqp://u:p@mq:5672/%2f ,postgres",
        ])
        .unwrap();
        assert_eq!(
            a.node.bus,
            vec![
                BusTransport::Local,
                BusTransport::Socket("/run/courier".into()),
                BusTransport::Amqp("amqp://u:p@mq:5672/%2f".into()),
                BusTransport::Postgres,
            ]
        );
        let e = serve(&["--bus", "local,rabbit"]).unwrap_err().to_string();
        assert!(e.contains("unknown transport \"rabbit\""), "{e}");
        let e = serve(&["--bus", "socket:"]).unwrap_err().to_string();
        assert!(e.contains("socket:DIR"), "{e}");
    }

    #[test]
    fn kinds_are_trimmed_names() {
        let a = serve(&["--kinds", "demo.echo, demo.sleep"]).unwrap();
        assert_eq!(
            a.exec.kinds,
            Some(vec!["demo.echo".to_string(), "demo.sleep".to_string()])
        );
        assert_eq!(serve(&[]).unwrap().exec.kinds, None);
        let e = serve(&["--kinds", "demo.echo,,demo.sleep"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("an empty kind name"), "{e}");
    }
}
