//! courier's own HTTP server: the API, dashboard and metrics on one
//! listener, with a tracing span per request.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{App, HttpServer};
use tracing_actix_web::TracingLogger;

use crate::WebState;

/// Builds the server on an already bound listener (bind port 0 in tests).
/// The caller awaits the returned [`Server`] and stops it through its
/// handle, after [`WebState::begin_shutdown`] so that waiting requests and
/// watch streams end at once; [`stop_on_signals`] does both on SIGTERM or
/// SIGINT.
pub fn build(state: WebState, listener: TcpListener, workers: usize) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        let state = state.clone();
        App::new()
            .wrap(TracingLogger::default())
            .configure(|cfg| state.configure(cfg))
    })
    .workers(workers.max(1))
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
