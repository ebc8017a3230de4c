//! PostgreSQL restarted while tasks run: executors and web nodes retry with
//! backoff and resume; every task finishes exactly once, none is lost. One
//! test in its own binary on purpose: it restarts the shared server, which
//! no other test may see.

mod common;

use std::process::Command;
use std::time::Duration;

use common::procs::Proc;
use serde_json::json;

fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .unwrap();
    let out = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .output()
        .expect("pg_ctlcluster");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_postgres_restart_mid_run_loses_nothing() {
    let (url, _db) = {
        let db = actix::System::new().block_on(common::TestDb::postgres());
        let schema = db.options.pg_schema.clone().unwrap();
        let sep = if db.url.contains('?') { "&" } else { "?" };
        (
            format!("{}{sep}options=-c%20search_path%3D{schema}", db.url),
            db,
        )
    };
    let server = Proc::start("serve", &["serve", "--demo", "--db", &url]);
    let mut ids = Vec::new();
    for i in 0..30 {
        let (st, t) = server.post(
            "/api/v1/tasks",
            json!({"kind": "demo.sleep", "input": {"ms": 300 + 50 * (i % 10)}}),
        );
        assert_eq!(st, 201, "{t}");
        ids.push(t["id"].as_str().unwrap().to_string());
    }
    std::thread::sleep(Duration::from_millis(200));
    restart_postgres();
    for id in &ids {
        server.finished_once(id, Duration::from_secs(60));
    }
    let (st, t) = server.post(
        "/api/v1/tasks",
        json!({"kind": "demo.echo", "input": "after", "wait_ms": 5000}),
    );
    assert_eq!((st, &t["output"]), (200, &json!("after")));
}
