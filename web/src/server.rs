//! courier's own HTTP server: the API, dashboard and metrics on one
//! listener, with a tracing span per request.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{App, HttpServer};
use tracing_actix_web::TracingLogger;

use crate::WebState;

/// Connections the kernel holds, accepted but not yet taken by the server
/// (Linux caps it at `net.core.somaxconn`, 4096 by default).
pub const BACKLOG: i32 = 4096;

/// Builds the server on an already bound listener (bind port 0 in tests).
/// The caller awaits the returned [`Server`] and stops it through its
/// handle, after [`WebState::begin_shutdown`] so that waiting requests and
/// watch streams end at once; [`stop_on_signals`] does both on SIGTERM or
/// SIGINT.
///
/// At most `max_connections` connections are served at once, shared out
/// over the workers; past it the server stops accepting, so new clients
/// wait in the kernel's accept queue (made [`BACKLOG`] long here): an
/// overload slows clients down instead of holding their requests (each up
/// to the body limit) in memory. Inside, the group-commit lanes and the
/// bus's mailbox are bounded too (ARCHITECTURE.md, "Backpressure").
pub fn build(
    state: WebState,
    listener: TcpListener,
    workers: usize,
    max_connections: usize,
) -> std::io::Result<Server> {
    // std binds with a backlog of 128: past that, a client's SYN is dropped
    // and retried after 1, 3, 7, 15 … s, so a crowd waiting at a full
    // server sat idle in TCP's backoff while slots were free (202 creates/s
    // instead of 1,160 at --max-connections 256, BENCHMARKS.md "Overload").
    // Listening again sets the backlog of the bound socket.
    socket2::SockRef::from(&listener).listen(BACKLOG)?;
    let workers = workers.max(1);
    let per_worker = max_connections.max(1).div_ceil(workers);
    let server = HttpServer::new(move || {
        let state = state.clone();
        App::new()
            .wrap(TracingLogger::default())
            .configure(|cfg| state.configure(cfg))
    })
    .workers(workers)
    .max_connections(per_worker)
    .disable_signals()
    // Waiting requests and watch streams end as soon as the stop begins;
    // this only bounds requests still talking to the database.
    .shutdown_timeout(10)
    .listen(listener)?
    .run();
    Ok(server)
}

/// Stops `server` gracefully on the first SIGTERM or SIGINT: waiting
/// requests answer with the task as it stands, watch streams end, requests
/// in flight finish, then the server's future completes.
pub fn stop_on_signals(state: WebState, server: &Server) {
    let handle = server.handle();
    // The handlers are installed now, before the caller says it listens: a
    // SIGTERM right after that line stops the server cleanly instead of
    // killing it (the tests' first SIGTERM came before a spawned task ran).
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT");
        return;
    };
    actix_web::rt::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        state.begin_shutdown();
        handle.stop(true).await;
    });
}

/// A server of `/metrics` and `/healthz` only (no API, no dashboard), for
/// a process that runs an executor without the web front end. One worker;
/// the caller stops it through its handle.
pub fn build_metrics(state: WebState, listener: TcpListener) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        let state = state.clone();
        App::new().configure(|cfg| state.configure_metrics(cfg))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok(server)
}
