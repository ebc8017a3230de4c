//! The worker protocol (`/api/v1/workers/…`, PROTOCOL.md section 7) driven
//! over HTTP against a real server, on SQLite and PostgreSQL: a "worker"
//! written here by hand, as a worker in another language would speak it.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::TestDb;
use courier::web::{server, WebConfig, WebState};
use serde_json::{json, Value};

struct Server {
    base: String,
    http: awc::Client,
    rt: Option<courier::Runtime>,
    handle: actix_web::dev::ServerHandle,
}

impl Server {
    async fn start(db: &TestDb) -> Server {
        let rt = db.builder().start().await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let exec = common::fast_executor();
        let state = WebState::new(rt.client(), WebConfig::default()).with_worker_lease(
            courier::actors::workers::WorkerConfig {
                renew_every: exec.heartbeat_interval,
                dead_after: exec.dead_after,
            },
        );
        let srv = server::build(state, listener, 2, 1024).unwrap();
        let handle = srv.handle();
        actix_web::rt::spawn(srv);
        Server {
            base,
            http: awc::Client::builder()
                .timeout(Duration::from_secs(40))
                .finish(),
            rt: Some(rt),
            handle,
        }
    }

    async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(rt) = self.rt.take() {
            rt.shutdown().await;
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/api/v1{}", self.base, path);
        let req = match method {
            "GET" => self.http.get(&url),
            "POST" => self.http.post(&url),
            "DELETE" => self.http.delete(&url),
            _ => unreachable!(),
        };
        let mut resp = match body {
            Some(b) => req
                .insert_header(("Content-Type", "application/json"))
                .send_body(b.to_string())
                .await
                .unwrap(),
            None => req.send().await.unwrap(),
        };
        let status = resp.status().as_u16();
        let bytes = resp.body().limit(16 << 20).await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    async fn register(&self, name: &str, kinds: &[&str], queue: &str) -> String {
        let (s, v) = self
            .post(
                "/workers",
                json!({"name": name, "language": "test", "kinds": kinds, "queues": [queue], "capacity": 4}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn claim(&self, w: &str, wait_ms: u64) -> Option<Value> {
        let (s, v) = self
            .post(
                &format!("/workers/{w}/claim"),
                json!({"max": 1, "wait_ms": wait_ms}),
            )
            .await;
        match s {
            200 => Some(v["tasks"][0].clone()),
            204 => None,
            _ => panic!("claim: {s} {v}"),
        }
    }

    async fn wait_state(&self, id: &str, state: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, t) = self.get(&format!("/tasks/{id}")).await;
            if t["state"] == state {
                return t;
            }
            assert!(Instant::now() < until, "task {id} never {state}: {t}");
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn tid(c: &Value) -> (String, i64) {
    (
        c["task"]["id"].as_str().unwrap().to_string(),
        c["epoch"].as_i64().unwrap(),
    )
}

async fn the_protocol(db: &TestDb) {
    let s = Server::start(db).await;
    let w = s.register("w1", &["py.flow"], "py").await;
    // The kind is known from the registration on.
    let (_, kinds) = s.get("/kinds").await;
    assert!(kinds.to_string().contains("py.flow"), "{kinds}");
    // An idle long poll answers 204 at its end.
    let t0 = Instant::now();
    assert!(s.claim(&w, 300).await.is_none());
    assert!(t0.elapsed() >= Duration::from_millis(300));

    // A long poll that a create ends at once.
    let poll = {
        let http = awc::Client::builder()
            .timeout(Duration::from_secs(40))
            .finish();
        let url = format!("{}/api/v1/workers/{w}/claim", s.base);
        actix_rt::spawn(async move {
            let t = Instant::now();
            let mut r = http
                .post(url)
                .insert_header(("Content-Type", "application/json"))
                .send_body(json!({"max": 1, "wait_ms": 20000}).to_string())
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&r.body().await.unwrap()).unwrap();
            (t.elapsed(), v)
        })
    };
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let (st, task) = s
        .post(
            "/tasks",
            json!({"kind": "py.flow", "queue": "py", "input": {"n": 1}}),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_string();
    let (took, claimed) = poll.await.unwrap();
    assert!(took < Duration::from_millis(1500), "woken late: {took:?}");
    let c = claimed["tasks"][0].clone();
    assert_eq!(c["task"]["id"], id.as_str());
    assert_eq!(c["task"]["state"], "running");
    assert_eq!(c["journal"], json!([]));
    let (_, epoch) = tid(&c);

    // A step, a spawn of a Rust kind, a suspension on it.
    let base = format!("/workers/{w}/tasks/{id}");
    let (st, v) = s
        .post(
            &format!("{base}/steps"),
            json!({"epoch": epoch, "name": "allocate", "state": "succeeded", "output": {"ip": "10.0.0.7"}}),
        )
        .await;
    assert_eq!(st, 204, "{v}");
    let (st, v) = s
        .post(
            &format!("{base}/progress"),
            json!({"epoch": epoch, "value": 0.5}),
        )
        .await;
    assert_eq!(st, 204, "{v}");
    let (st, child) = s
        .post(
            &format!("{base}/spawn"),
            json!({"epoch": epoch, "seq": 0, "kind": "demo.echo", "input": {"x": 1}}),
        )
        .await;
    assert_eq!(st, 200, "{child}");
    // The same number is the same sub-task.
    let (_, again) = s
        .post(
            &format!("{base}/spawn"),
            json!({"epoch": epoch, "seq": 0, "kind": "demo.echo", "input": {"x": 1}}),
        )
        .await;
    assert_eq!(again["id"], child["id"]);
    let child_id = child["id"].as_str().unwrap().to_string();
    let (st, v) = s
        .post(
            &format!("{base}/suspend"),
            json!({"epoch": epoch, "children": [child_id]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    if v["suspended"] == true {
        assert_eq!(v["task"]["state"], "suspended");
        // The child's end wakes it; a claim hands it over with its journal.
        let c = s.claim(&w, 10_000).await.expect("woken by its sub-task");
        assert_eq!(c["task"]["id"], id.as_str());
        assert_eq!(c["journal"][0]["name"], "allocate");
        assert_eq!(c["journal"][0]["output"]["ip"], "10.0.0.7");
        assert_eq!(c["children"][0]["output"], json!({"x": 1}));
        let (_, e2) = tid(&c);
        assert!(e2 > epoch, "a new claim is a new epoch");
        // The old epoch is fenced.
        let (st, v) = s
            .post(
                &format!("{base}/progress"),
                json!({"epoch": epoch, "value": 1}),
            )
            .await;
        assert_eq!((st, v["error"]["code"].as_str()), (409, Some("fenced")));
        wait_event_and_finish(&s, &w, &id, e2).await;
    } else {
        // The child ended as it suspended: still held, run again.
        assert_eq!(v["children"][0]["output"], json!({"x": 1}));
        wait_event_and_finish(&s, &w, &id, epoch).await;
    }
    let t = s.wait_state(&id, "succeeded").await;
    assert_eq!(t["output"], json!({"ok": true}));

    // A failed attempt with attempts left is retried, then fails.
    let (_, task) = s
        .post(
            "/tasks",
            json!({"kind": "py.flow", "queue": "py", "max_attempts": 2, "backoff_ms": 1}),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_string();
    for attempt in 1..=2 {
        let c = s.claim(&w, 10_000).await.expect("claimed");
        assert_eq!(c["task"]["attempts"], attempt);
        let (tid_, epoch) = tid(&c);
        let (st, t) = s
            .post(
                &format!("/workers/{w}/tasks/{tid_}/finish"),
                json!({"epoch": epoch, "outcome": "failed", "error": format!("boom {attempt}")}),
            )
            .await;
        assert_eq!(st, 200, "{t}");
        assert_eq!(
            t["state"],
            if attempt == 1 { "scheduled" } else { "failed" }
        );
    }
    let t = s.wait_state(&id, "failed").await;
    assert_eq!(t["errors"].as_array().unwrap().len(), 2);

    // A cancel reaches the worker through its renewal.
    let (_, task) = s
        .post("/tasks", json!({"kind": "py.flow", "queue": "py"}))
        .await;
    let id = task["id"].as_str().unwrap().to_string();
    let c = s.claim(&w, 10_000).await.expect("claimed");
    let (_, epoch) = tid(&c);
    s.post(&format!("/tasks/{id}/cancel"), json!({})).await;
    let (st, r) = s
        .post(
            &format!("/workers/{w}/renew"),
            json!({"running": [{"task_id": id, "epoch": epoch}]}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["cancel"], json!([id]));
    let (st, _) = s
        .post(
            &format!("/workers/{w}/tasks/{id}/finish"),
            json!({"epoch": epoch, "outcome": "cancelled"}),
        )
        .await;
    assert_eq!(st, 200);
    s.wait_state(&id, "cancelled").await;

    // A worker that stops renewing is declared dead: its task goes to
    // another worker, and the zombie is fenced and told it is gone.
    let (_, task) = s
        .post("/tasks", json!({"kind": "py.flow", "queue": "py"}))
        .await;
    let id = task["id"].as_str().unwrap().to_string();
    let c = s.claim(&w, 10_000).await.expect("claimed");
    let (_, epoch) = tid(&c);
    let w2 = s.register("w2", &["py.flow"], "py").await;
    let keep = {
        let http = awc::Client::new();
        let url = format!("{}/api/v1/workers/{w2}/renew", s.base);
        actix_rt::spawn(async move {
            loop {
                let _ = http
                    .post(&url)
                    .insert_header(("Content-Type", "application/json"))
                    .send_body("{}")
                    .await;
                actix_rt::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let c2 = s.claim(&w2, 20_000).await.expect("taken over");
    assert_eq!(c2["task"]["id"], id.as_str());
    let (st, v) = s
        .post(
            &format!("/workers/{w}/tasks/{id}/finish"),
            json!({"epoch": epoch, "outcome": "succeeded"}),
        )
        .await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("fenced")));
    let (st, v) = s.post(&format!("/workers/{w}/renew"), json!({})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (410, Some("worker_gone"))
    );
    let (st, v) = s
        .post(
            &format!("/workers/{w}/claim"),
            json!({"max": 1, "wait_ms": 0}),
        )
        .await;
    assert_eq!(st, 410, "{v}");
    let (_, e2) = tid(&c2);
    let (st, _) = s
        .post(
            &format!("/workers/{w2}/tasks/{id}/release"),
            json!({"epoch": e2}),
        )
        .await;
    assert_eq!(st, 204);
    keep.abort();
    let (st, _) = s.call("DELETE", &format!("/workers/{w2}"), None).await;
    assert_eq!(st, 204);
    // Known but stopped: 410; never registered: 404.
    let (st, v) = s.call("DELETE", &format!("/workers/{w2}"), None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (410, Some("worker_gone"))
    );
    for (method, op, body) in [
        ("POST", "/claim", Some(json!({"max": 1, "wait_ms": 0}))),
        ("POST", "/renew", Some(json!({}))),
        ("DELETE", "", None),
    ] {
        let (st, v) = s
            .call(method, &format!("/workers/worker-nobody-0{op}"), body)
            .await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{op}"
        );
    }
    // A suspension that waits for nothing is refused.
    let (st, v) = s
        .post(
            &format!("/workers/{w2}/tasks/{id}/suspend"),
            json!({"epoch": e2, "children": []}),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("invalid_field")),
        "{v}"
    );
    // The executors view shows workers with their language and name.
    let (_, ex) = s.get("/executors").await;
    let ws: Vec<&Value> = ex["executors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["language"] == "test")
        .collect();
    assert_eq!(ws.len(), 2, "{ex}");
    assert!(ws
        .iter()
        .any(|e| e["name"] == "w2" && e["state"] == "stopped"));
    assert!(ws.iter().any(|e| e["name"] == "w1" && e["state"] == "dead"));
    // Still known once its workers are gone.
    let (st, _) = s
        .post("/tasks", json!({"kind": "py.flow", "queue": "py"}))
        .await;
    assert_eq!(st, 201);
    s.stop().await;
}

async fn wait_event_and_finish(s: &Server, w: &str, id: &str, epoch: i64) {
    let base = format!("/workers/{w}/tasks/{id}");
    let (st, v) = s
        .post(
            &format!("{base}/suspend"),
            json!({"epoch": epoch, "event": "booted", "seen_seq": 0}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["suspended"], true);
    let (st, _) = s
        .post(
            &format!("/tasks/{id}/events"),
            json!({"name": "booted", "payload": {"up": 1}}),
        )
        .await;
    assert_eq!(st, 202);
    let c = s.claim(w, 10_000).await.expect("woken by its event");
    assert_eq!(c["events"][0]["name"], "booted");
    assert_eq!(c["journal"][0]["name"], "allocate");
    let (_, e) = tid(&c);
    let (st, t) = s
        .post(
            &format!("{base}/finish"),
            json!({"epoch": e, "outcome": "succeeded", "output": {"ok": true}}),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["state"], "succeeded");
}

#[actix_rt::test]
async fn workers_protocol_sqlite() {
    let db = TestDb::sqlite().await;
    the_protocol(&db).await;
}

#[actix_rt::test]
async fn workers_protocol_postgres() {
    let db = TestDb::postgres().await;
    the_protocol(&db).await;
    db.cleanup().await;
}
