//! The HTTP API v1 end to end: a real server on a free loopback port, a real
//! HTTP client, every endpoint and every error status.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::TestDb;
use courier::web::{server, WebConfig, WebState};
use futures_util::StreamExt;
use serde_json::{json, Value};

struct Server {
    base: String,
    http: awc::Client,
    rt: Option<courier::Runtime>,
    handle: actix_web::dev::ServerHandle,
}

impl Server {
    async fn start(db: &TestDb, config: WebConfig) -> Server {
        Self::start_with(db, config, |b| b).await
    }

    async fn start_with(
        db: &TestDb,
        config: WebConfig,
        customize: impl FnOnce(courier::RuntimeBuilder) -> courier::RuntimeBuilder,
    ) -> Server {
        let rt = customize(db.builder()).start().await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let srv = server::build(WebState::new(rt.client(), config), listener, 1, 1024).unwrap();
        let handle = srv.handle();
        actix_web::rt::spawn(srv);
        Server {
            base,
            http: awc::Client::builder()
                .timeout(Duration::from_secs(30))
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

    /// Sends a request; returns the status and the body parsed as JSON (or
    /// as a string when it is not JSON).
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        let mut req = match method {
            "GET" => self.http.get(&url),
            "POST" => self.http.post(&url),
            "PUT" => self.http.put(&url),
            "DELETE" => self.http.delete(&url),
            _ => unreachable!(),
        };
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
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
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(&body.to_string()), None).await
    }
}

fn field(v: &Value) -> &str {
    v["error"]["field"]
        .as_str()
        .unwrap_or_else(|| panic!("the error names no field: {v}"))
}

fn code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an API error: {v}"))
}

async fn the_api_end_to_end(db: &TestDb) {
    let s = Server::start(
        db,
        WebConfig {
            body_limit: 4096,
            max_wait: Duration::from_secs(5),
            tokens: Vec::new(),
        },
    )
    .await;

    // --- create: 201, 200 (finished within wait_ms), 202 (wait ran out), idempotency
    let (st, t) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.echo", "input": {"n": 1}}),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    assert_eq!(t["state"], "pending");
    let echo = t["id"].as_str().unwrap().to_string();
    let (st, t) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.echo", "input": [1, "two"], "wait_ms": 5000}),
        )
        .await;
    assert_eq!(
        (st, &t["state"], &t["output"]),
        (200, &json!("succeeded"), &json!([1, "two"]))
    );
    let (st, t) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.sleep", "input": {"ms": 60000}, "wait_ms": 100}),
        )
        .await;
    assert_eq!((st, &t["state"]), (202, &json!("running")), "{t}");
    let sleeper = t["id"].as_str().unwrap().to_string();
    let (st, a) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.echo", "input": 1, "idempotency_key": "k-1"}),
        )
        .await;
    assert_eq!(st, 201);
    let (st, b) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.echo", "input": 2, "idempotency_key": "k-1"}),
        )
        .await;
    assert_eq!((st, &b["id"], &b["input"]), (200, &a["id"], &json!(1)));

    // --- create: every refusal
    let (st, e) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some("{\"kind\": \"demo.echo\","),
            None,
        )
        .await;
    assert_eq!((st, code(&e)), (400, "malformed_json"));
    let (st, e) = s
        .call("POST", "/api/v1/tasks", Some("not json at all"), None)
        .await;
    assert_eq!((st, code(&e)), (400, "malformed_json"));
    let mut resp = s
        .http
        .post(format!("{}/api/v1/tasks", s.base))
        .insert_header(("Content-Type", "text/plain"))
        .send_body("{\"kind\":\"demo.echo\"}")
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(code(&e), "malformed_json");
    let big = json!({"kind": "demo.echo", "input": "x".repeat(5000)});
    let (st, e) = s.post("/api/v1/tasks", big).await;
    assert_eq!((st, code(&e)), (413, "body_too_large"));
    let (st, e) = s
        .post("/api/v1/tasks", json!({"kind": "no.such.kind"}))
        .await;
    assert_eq!((st, code(&e)), (422, "unknown_kind"));
    for bad in [
        json!({"kind": "bad kind"}),
        json!({"kind": ""}),
        json!({"kind": 5}),
        json!({"input": 1}),
        json!({"kind": "demo.echo", "wait_ms": 999999}),
        json!({"kind": "demo.echo", "wait_ms": -1}),
        json!({"kind": "demo.echo", "wait": 10}),
        json!({"kind": "demo.echo", "idempotency_key": ""}),
        json!("just a string"),
    ] {
        let (st, e) = s.post("/api/v1/tasks", bad.clone()).await;
        assert_eq!((st, code(&e)), (422, "invalid_field"), "{bad} → {e}");
    }

    // --- read one, 404, bad id
    let (st, t) = s.get(&format!("/api/v1/tasks/{echo}")).await;
    assert_eq!((st, t["id"].as_str()), (200, Some(echo.as_str())));
    let missing = uuid::Uuid::now_v7();
    let (st, e) = s.get(&format!("/api/v1/tasks/{missing}")).await;
    assert_eq!((st, code(&e)), (404, "not_found"));
    let (st, e) = s.get("/api/v1/tasks/not-a-uuid").await;
    assert_eq!((st, code(&e)), (400, "invalid_query"));
    let (st, e) = s.get("/api/v1/nothing-here").await;
    assert_eq!((st, code(&e)), (404, "not_found"));
    // A path that exists, with a method it does not have: 405, not 404.
    for (method, path) in [
        ("DELETE", "/api/v1/tasks".to_string()),
        ("PUT", format!("/api/v1/tasks/{echo}")),
        ("GET", "/api/v1/tasks/batch".to_string()),
        ("POST", "/metrics".to_string()),
        ("DELETE", "/api/v1/queues/default".to_string()),
    ] {
        let (st, e) = s.call(method, &path, None, None).await;
        assert_eq!(
            (st, code(&e)),
            (405, "method_not_allowed"),
            "{method} {path}: {e}"
        );
    }

    // --- list: filters, paging, refusals
    let (st, page) = s.get("/api/v1/tasks?kind=demo.echo&limit=2").await;
    assert_eq!(st, 200);
    assert_eq!(page["tasks"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap().to_string();
    // By id or its start (a whole id, dashes or not); a bad one is 400.
    let (st, found) = s.get(&format!("/api/v1/tasks?id={next}")).await;
    assert_eq!(st, 200);
    assert_eq!(found["tasks"][0]["id"].as_str(), Some(next.as_str()));
    assert_eq!(found["tasks"].as_array().unwrap().len(), 1);
    for bad in ["xyz", ""] {
        let (st, e) = s.get(&format!("/api/v1/tasks?id={bad}")).await;
        assert_eq!((st, code(&e)), (400, "invalid_query"), "id={bad}: {e}");
    }
    let (_, page2) = s
        .get(&format!(
            "/api/v1/tasks?kind=demo.echo&limit=2&after={next}"
        ))
        .await;
    let first_ids: Vec<_> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].clone())
        .collect();
    assert!(page2["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| !first_ids.contains(&t["id"])));
    let (_, all) = s.get("/api/v1/tasks?kind=demo.echo&limit=1000").await;
    assert_eq!(all["tasks"].as_array().unwrap().len(), 3);
    assert!(all["next"].is_null());
    let (_, running) = s.get("/api/v1/tasks?state=running").await;
    assert!(running["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == json!(sleeper)));
    for bad in [
        "state=done",
        "limit=0",
        "limit=1001",
        "limit=x",
        "after=nope",
        "parent=nope",
        "color=blue",
    ] {
        let (st, e) = s.get(&format!("/api/v1/tasks?{bad}")).await;
        assert_eq!((st, code(&e)), (400, "invalid_query"), "{bad}");
    }

    // --- sub-tasks
    let (st, f) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.fanout", "input": {"n": 3, "kind": "demo.echo", "input": "c"}, "wait_ms": 5000}),
        )
        .await;
    assert_eq!((st, &f["output"]["children"]), (200, &json!(3)), "{f}");
    let fid = f["id"].as_str().unwrap();
    let (st, ch) = s.get(&format!("/api/v1/tasks/{fid}/children")).await;
    assert_eq!(st, 200);
    assert_eq!(ch["tasks"].as_array().unwrap().len(), 3);
    assert!(ch["next"].is_null());
    let (_, by_parent) = s.get(&format!("/api/v1/tasks?parent={fid}")).await;
    assert_eq!(by_parent["tasks"].as_array().unwrap().len(), 3);
    let (st, _) = s.get(&format!("/api/v1/tasks/{missing}/children")).await;
    assert_eq!(st, 404);

    // --- events, with the watch stream open
    let (_, w) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.await_event", "input": {"name": "booted"}}),
        )
        .await;
    let wid = w["id"].as_str().unwrap().to_string();
    let mut stream = s
        .http
        .get(format!("{}/api/v1/tasks/{wid}/watch", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(
        stream
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap(),
        "text/event-stream"
    );
    common::until_state(
        &s.rt.as_ref().unwrap().client(),
        wid.parse().unwrap(),
        courier::TaskState::Suspended,
    )
    .await;
    let (st, ev) = s
        .post(
            &format!("/api/v1/tasks/{wid}/events"),
            json!({"name": "booted", "payload": {"ip": "10.0.0.9"}}),
        )
        .await;
    assert_eq!((st, &ev["name"]), (202, &json!("booted")));
    let mut text = String::new();
    while !text.contains("event: end") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the watch stream stalled")
            .expect("the watch stream ended early")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let states: Vec<String> = text
        .split("\n\n")
        .filter(|f| f.starts_with("event: state"))
        .map(|f| {
            let data: Value = serde_json::from_str(f.split("data: ").nth(1).unwrap()).unwrap();
            data["state"].as_str().unwrap().to_string()
        })
        .collect();
    // Opened just after the task was created, the stream starts wherever the
    // task stood then and follows each change: the suspension, the wake
    // when the event arrived (pending: no actor held it), the resume, the
    // end.
    let n = states.len();
    assert!(n >= 4, "{states:?}");
    assert_eq!(
        states[n - 4..],
        ["suspended", "pending", "running", "succeeded"],
        "{text}"
    );
    let (st, evs) = s.get(&format!("/api/v1/tasks/{wid}/events")).await;
    assert_eq!((st, evs["events"].as_array().unwrap().len()), (200, 1));
    let (st, e) = s
        .post(
            &format!("/api/v1/tasks/{wid}/events"),
            json!({"name": "late", "payload": 1}),
        )
        .await;
    assert_eq!((st, code(&e)), (409, "conflict"));
    let (st, e) = s
        .post(
            &format!("/api/v1/tasks/{missing}/events"),
            json!({"name": "x"}),
        )
        .await;
    assert_eq!((st, code(&e)), (404, "not_found"));
    let (st, e) = s
        .post(
            &format!("/api/v1/tasks/{wid}/events"),
            json!({"payload": 1}),
        )
        .await;
    assert_eq!((st, code(&e)), (422, "invalid_field"));
    let (st, e) = s
        .post(&format!("/api/v1/tasks/{wid}/events"), json!({"name": ""}))
        .await;
    assert_eq!((st, code(&e)), (422, "invalid_field"));
    let (st, e) = s.get(&format!("/api/v1/tasks/{missing}/watch")).await;
    assert_eq!((st, code(&e)), (404, "not_found"));
    // Watching a finished task gives its state and the end at once.
    let (st, body) = s.get(&format!("/api/v1/tasks/{wid}/watch")).await;
    let body = body.as_str().unwrap().to_string();
    assert_eq!(st, 200);
    assert!(
        body.contains("\"state\":\"succeeded\"") && body.ends_with("event: end\ndata: {}\n\n"),
        "{body}"
    );

    // --- history
    let (st, h) = s.get(&format!("/api/v1/tasks/{wid}/history")).await;
    let states: Vec<_> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to_state"].clone())
        .collect();
    assert_eq!(st, 200);
    assert_eq!(
        states,
        [
            json!("pending"),
            json!("running"),
            json!("suspended"),
            json!("pending"),
            json!("running"),
            json!("succeeded")
        ]
    );

    // --- cancel: running task, final task, unknown task
    let (st, t) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{sleeper}/cancel"),
            None,
            None,
        )
        .await;
    assert_eq!(st, 202, "{t}");
    let (t, fin) =
        s.rt.as_ref()
            .unwrap()
            .client()
            .wait(sleeper.parse().unwrap(), Duration::from_secs(10))
            .await
            .unwrap();
    assert!(fin && t.state == courier::TaskState::Cancelled);
    let (st, t) = s
        .call("POST", &format!("/api/v1/tasks/{echo}/cancel"), None, None)
        .await;
    assert_eq!((st, &t["state"]), (202, &json!("succeeded")));
    let (st, _) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{missing}/cancel"),
            None,
            None,
        )
        .await;
    assert_eq!(st, 404);

    // --- executors, kinds, documents, health, metrics, dashboard
    let (st, ex) = s.get("/api/v1/executors").await;
    assert_eq!(st, 200);
    let e0 = &ex["executors"][0];
    assert_eq!(e0["state"], "alive");
    for field in [
        "id",
        "host",
        "pid",
        "kinds",
        "capacity",
        "running",
        "started_at",
        "last_seen_at",
    ] {
        assert!(!e0[field].is_null(), "executor field {field} missing: {e0}");
    }
    let (st, k) = s.get("/api/v1/kinds").await;
    assert_eq!(st, 200);
    assert!(k["kinds"]
        .as_array()
        .unwrap()
        .contains(&json!("demo.fanout")));
    let (st, doc) = s.get("/api/v1/openapi.json").await;
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    // The generated document and the routes agree: every path it names is
    // routed with exactly its methods (a method it lacks answers 405 with
    // an `Allow` header listing the routed ones), and the design's paths
    // are all in it.
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/tasks",
        "/api/v1/tasks/batch",
        "/api/v1/tasks/{id}",
        "/api/v1/tasks/{id}/children",
        "/api/v1/tasks/{id}/events",
        "/api/v1/tasks/{id}/cancel",
        "/api/v1/tasks/{id}/watch",
        "/api/v1/executors",
        "/api/v1/queues",
        "/api/v1/queues/{name}",
        "/api/v1/schedules",
        "/api/v1/schedules/{name}",
        "/healthz",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "openapi.json lacks {p}");
    }
    for (path, ops) in paths {
        let mut documented: Vec<String> = ops
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| ["get", "put", "post", "delete", "patch"].contains(&m.as_str()))
            .map(|m| m.to_uppercase())
            .collect();
        documented.sort();
        let url = format!(
            "{}{}",
            s.base,
            path.replace("{id}", &uuid::Uuid::now_v7().to_string())
                .replace("{name}", "default")
        );
        let resp = s
            .http
            .request(actix_web::http::Method::PATCH, &url)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "PATCH {path}");
        let mut allowed: Vec<String> = resp
            .headers()
            .get("allow")
            .expect("an Allow header")
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_string())
            .collect();
        allowed.sort();
        assert_eq!(allowed, documented, "{path}: routed vs documented methods");
    }
    // The kinds this deployment runs are the document's `Kind`.
    assert!(doc["components"]["schemas"]["Kind"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("demo.echo")));
    // Every answer the handlers build has its schema.
    for schema in [
        "Task",
        "TaskPage",
        "TaskWithSteps",
        "ErrorBody",
        "Queue",
        "Executor",
        "Health",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema}"
        );
    }
    // An integral number written with a fraction is an integer (as JSON
    // Schema says) in the API's own fields; the input stays as sent.
    let (st, t) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.echo", "input": {"x": 1.0}, "priority": 2.0, "max_attempts": 3.0, "wait_ms": 5000.0}),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(
        (t["priority"].clone(), t["max_attempts"].clone()),
        (json!(2), json!(3))
    );
    assert_eq!(t["output"].to_string(), r#"{"x":1.0}"#);
    let (st, e) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.echo", "priority": 2.5}),
        )
        .await;
    assert_eq!((st, field(&e)), (422, "priority"), "{e}");
    let (st, h) = s.get("/healthz").await;
    assert_eq!((st, &h["status"]), (200, &json!("ok")));
    let (st, m) = s.get("/metrics").await;
    let m = m.as_str().unwrap();
    assert_eq!(st, 200);
    assert!(
        m.contains("courier_tasks_created_total{kind=\"demo.echo\"}"),
        "{m}"
    );
    assert!(m.contains("courier_tasks_finished_total{kind=\"demo.echo\",state=\"succeeded\"}"));
    assert!(m.contains("courier_tasks{state=\"pending\"}"));
    assert!(m.contains("courier_dispatch_latency_seconds_count"));
    assert!(m.contains("courier_bus_messages_total{transport=\"local\"}"));
    check_openmetrics(m);
    let (st, page) = s.get("/").await;
    assert_eq!(st, 200);
    assert!(page.as_str().unwrap().contains("<title>courier"));
    s.stop().await;
}

/// With a token configured, the API needs it; health, metrics and the
/// dashboard page stay open.
async fn bearer_tokens_guard_the_api(db: &TestDb) {
    let s = Server::start(
        db,
        WebConfig {
            tokens: vec!["first-token".into(), "second-token".into()],
            ..WebConfig::default()
        },
    )
    .await;
    let body = r#"{"kind":"demo.echo","input":1}"#;
    for token in [None, Some("wrong"), Some(""), Some("first-token-and-more")] {
        let (st, e) = s.call("POST", "/api/v1/tasks", Some(body), token).await;
        assert_eq!((st, code(&e)), (401, "unauthorized"), "{token:?}");
        let (st, _) = s.call("GET", "/api/v1/tasks", None, token).await;
        assert_eq!(st, 401);
    }
    for token in ["first-token", "second-token"] {
        let (st, _) = s
            .call("POST", "/api/v1/tasks", Some(body), Some(token))
            .await;
        assert_eq!(st, 201);
    }
    for open in ["/healthz", "/metrics", "/"] {
        let (st, _) = s.get(open).await;
        assert_eq!(st, 200, "{open}");
    }
    s.stop().await;
}

/// Queue options, batches, queues and retention over HTTP: every bad value
/// is a 422 naming its field, a batch is all or nothing, a deleted task is
/// 404, and the metrics show retries, queue depth and what retention did.
async fn queue_semantics_over_http(db: &TestDb) {
    let s = Server::start_with(db, WebConfig::default(), |b| {
        b.executor(courier::ExecutorConfig {
            retention: "succeeded=1s,failed=0,cancelled=0".parse().unwrap(),
            retention_interval: Duration::from_millis(200),
            ..common::fast_executor()
        })
    })
    .await;
    let task = |extra: Value| {
        let mut b = json!({"kind": "demo.echo", "input": 1});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    for (extra, name) in [
        (json!({"queue": "Mail"}), "queue"),
        (json!({"queue": ""}), "queue"),
        (json!({"queue": "q".repeat(65)}), "queue"),
        (json!({"queue": 7}), "queue"),
        (json!({"priority": 101}), "priority"),
        (json!({"priority": -101}), "priority"),
        (json!({"priority": "high"}), "priority"),
        (json!({"priority": 1.5}), "priority"),
        (json!({"delay_ms": -1}), "delay_ms"),
        (json!({"delay_ms": 31_622_400_001u64}), "delay_ms"),
        (json!({"run_at": "tomorrow"}), "run_at"),
        (
            json!({"run_at": "2030-01-01T00:00:00Z", "delay_ms": 5}),
            "delay_ms",
        ),
        (json!({"max_attempts": 0}), "max_attempts"),
        (json!({"max_attempts": 101}), "max_attempts"),
        (json!({"backoff_ms": -5}), "backoff_ms"),
        (json!({"timeout_ms": 0}), "timeout_ms"),
        (json!({"retries": 3}), "retries"),
    ] {
        let (st, e) = s.post("/api/v1/tasks", task(extra.clone())).await;
        assert_eq!((st, code(&e)), (422, "invalid_field"), "{extra} → {e}");
        assert_eq!(field(&e), name, "{extra} → {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(name),
            "{e}"
        );
    }
    // Good values, and a queue nobody serves: accepted, it waits there.
    let (st, t) = s
        .post(
            "/api/v1/tasks",
            task(
                json!({"queue": "mail.out-1", "priority": -100, "max_attempts": 100,
                        "backoff_ms": 0, "timeout_ms": 1, "delay_ms": 0}),
            ),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    assert_eq!(
        (&t["state"], &t["queue"], &t["priority"], &t["max_attempts"]),
        (
            &json!("pending"),
            &json!("mail.out-1"),
            &json!(-100),
            &json!(100)
        )
    );
    let (st, t) = s
        .post("/api/v1/tasks", task(json!({"delay_ms": 3_600_000})))
        .await;
    assert_eq!((st, &t["state"]), (201, &json!("scheduled")));
    assert!(t["run_at"].is_string());
    let (st, l) = s.get("/api/v1/tasks?state=scheduled").await;
    assert_eq!((st, l["tasks"].as_array().unwrap().len()), (200, 1));
    let (st, l) = s.get("/api/v1/tasks?queue=mail.out-1").await;
    assert_eq!((st, l["tasks"].as_array().unwrap().len()), (200, 1));

    // A batch: all or nothing.
    let (_, before) = s.get("/api/v1/tasks?limit=1000").await;
    let before = before["tasks"].as_array().unwrap().len();
    for (batch, name, want) in [
        (
            json!({"tasks": [{"kind": "demo.echo"}, {"kind": "demo.echo", "priority": 500}]}),
            "tasks[1].priority",
            "invalid_field",
        ),
        (
            json!({"tasks": [{"kind": "demo.echo"}, {"kind": "demo.echo"}, {"kind": "nope"}]}),
            "tasks[2].kind",
            "unknown_kind",
        ),
        (
            json!({"tasks": [{"kind": "demo.echo", "wait_ms": 10}]}),
            "tasks[0].wait_ms",
            "invalid_field",
        ),
        (
            json!({"tasks": [{"kind": "demo.echo", "bogus": 1}]}),
            "tasks[0].bogus",
            "invalid_field",
        ),
        (
            json!({"tasks": vec![json!({"kind": "demo.echo"}); 1001]}),
            "tasks",
            "invalid_field",
        ),
        (json!({"jobs": []}), "jobs", "invalid_field"),
        (json!({"tasks": 5}), "tasks", "invalid_field"),
        (json!({"tasks": [5]}), "tasks[0]", "invalid_field"),
    ] {
        let (st, e) = s.post("/api/v1/tasks/batch", batch).await;
        assert_eq!((st, code(&e)), (422, want), "{e}");
        assert_eq!(field(&e), name, "{e}");
    }
    let (_, after) = s.get("/api/v1/tasks?limit=1000").await;
    assert_eq!(
        after["tasks"].as_array().unwrap().len(),
        before,
        "nothing kept"
    );
    let (st, b) = s
        .post(
            "/api/v1/tasks/batch",
            json!({"tasks": [
                {"kind": "demo.echo", "input": "a"},
                {"kind": "demo.echo", "input": "b", "priority": 5, "idempotency_key": "batch-b"},
                {"kind": "demo.echo", "input": "c", "delay_ms": 3_600_000},
            ]}),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    let got: Vec<_> = b["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["input"].clone(), t["state"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!("a"), json!("pending")),
            (json!("b"), json!("pending")),
            (json!("c"), json!("scheduled"))
        ]
    );

    // Queues.
    let (st, q) = s.get("/api/v1/queues").await;
    assert_eq!(st, 200);
    let names: Vec<_> = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"default".into()) && names.contains(&"mail.out-1".into()));
    let (st, q) = s
        .call(
            "PUT",
            "/api/v1/queues/mail.out-1",
            Some(r#"{"concurrency": 2, "rate_per_s": 0.5}"#),
            None,
        )
        .await;
    assert_eq!(st, 200, "{q}");
    assert_eq!(
        (
            &q["concurrency"],
            &q["rate_per_s"],
            &q["paused"],
            &q["pending"]
        ),
        (&json!(2), &json!(0.5), &json!(false), &json!(1))
    );
    let (st, q) = s
        .call(
            "PUT",
            "/api/v1/queues/mail.out-1",
            Some(r#"{"paused": true, "concurrency": null}"#),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        (&q["concurrency"], &q["rate_per_s"], &q["paused"]),
        (&json!(null), &json!(0.5), &json!(true))
    );
    for (body, name) in [
        (r#"{"concurrency": 0}"#, "concurrency"),
        (r#"{"concurrency": -3}"#, "concurrency"),
        (r#"{"rate_per_s": 0}"#, "rate_per_s"),
        (r#"{"rate_per_s": "fast"}"#, "rate_per_s"),
        (r#"{"paused": "yes"}"#, "paused"),
        (r#"{"limit": 3}"#, "limit"),
    ] {
        let (st, e) = s.call("PUT", "/api/v1/queues/q1", Some(body), None).await;
        assert_eq!((st, code(&e)), (422, "invalid_field"), "{body} → {e}");
        assert_eq!(field(&e), name, "{body} → {e}");
    }
    // Not an object: refused, not read as fields in order.
    let (st, e) = s.call("PUT", "/api/v1/queues/q1", Some("[5]"), None).await;
    assert_eq!((st, code(&e)), (422, "invalid_field"), "{e}");
    let (st, e) = s.post("/api/v1/tasks", json!(["demo.echo"])).await;
    assert_eq!((st, code(&e)), (422, "invalid_field"), "{e}");
    let (st, e) = s
        .call("PUT", "/api/v1/queues/Bad%20Name", Some("{}"), None)
        .await;
    assert_eq!((st, field(&e)), (422, "queue"));

    // Retries in the metrics; retention deletes what is due: 404 after.
    let (st, f) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.flaky", "input": {"fail_times": 1}, "max_attempts": 2,
                   "backoff_ms": 10, "wait_ms": 5000}),
        )
        .await;
    assert_eq!((st, &f["state"]), (200, &json!("succeeded")), "{f}");
    let id = f["id"].as_str().unwrap().to_string();
    common::eventually(
        "retention to delete the task",
        Duration::from_secs(20),
        || async { (s.get(&format!("/api/v1/tasks/{id}")).await.0 == 404).then_some(()) },
    )
    .await;
    let (st, e) = s.get(&format!("/api/v1/tasks/{id}/history")).await;
    assert_eq!((st, code(&e)), (404, "not_found"));
    let (_, m) = s.get("/metrics").await;
    let m = m.as_str().unwrap();
    // Counters are per process, and the tests of this file share one.
    let retries: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("courier_task_retries_total{queue=\"default\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(retries >= 1, "{m}");
    assert!(
        m.contains("courier_queue_tasks{queue=\"mail.out-1\",state=\"pending\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("courier_queue_paused{queue=\"mail.out-1\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("courier_retention_deleted_total{state=\"succeeded\"}"),
        "{m}"
    );
    s.stop().await;
}

/// Schedules over HTTP (create 201, replace 200, read, list, delete 204,
/// 404 after; 422 naming the field for every bad value), the `schedule`
/// filter, and a task's journaled steps in its JSON.
async fn schedules_and_steps_over_http(db: &TestDb) {
    let s = Server::start(db, WebConfig::default()).await;
    let put = |name: &str, body: Value| {
        let path = format!("/api/v1/schedules/{name}");
        let body = body.to_string();
        let s = &s;
        async move { s.call("PUT", &path, Some(&body), None).await }
    };
    let (st, sc) = put(
        "tick",
        json!({"cron": "* * * * * *", "kind": "demo.echo", "input": {"n": 1}, "queue": "ticks", "catch_up": "one"}),
    )
    .await;
    assert_eq!(st, 201, "{sc}");
    assert_eq!(
        (
            &sc["name"],
            &sc["cron"],
            &sc["queue"],
            &sc["catch_up"],
            &sc["enabled"]
        ),
        (
            &json!("tick"),
            &json!("* * * * * *"),
            &json!("ticks"),
            &json!("one"),
            &json!(true)
        )
    );
    assert_eq!(sc["priority"], Value::Null);
    assert_eq!(sc["next_runs"].as_array().unwrap().len(), 5);
    // Its tasks carry its name and are listed by it (the queue has no
    // executor here: they wait, which is enough).
    let listed = common::eventually("a slot to fire", Duration::from_secs(20), || async {
        let (_, l) = s.get("/api/v1/tasks?schedule=tick").await;
        let tasks = l["tasks"].as_array().cloned().unwrap_or_default();
        (!tasks.is_empty()).then_some(tasks)
    })
    .await;
    assert!(listed
        .iter()
        .all(|t| t["schedule"] == "tick" && t["queue"] == "ticks"));
    let (st, sc) = put(
        "tick",
        json!({"cron": "0 3 * * *", "kind": "demo.echo", "enabled": false}),
    )
    .await;
    assert_eq!(st, 200, "{sc}");
    assert_eq!(
        (&sc["enabled"], &sc["next_run_at"]),
        (&json!(false), &Value::Null)
    );
    assert_eq!(s.get("/api/v1/schedules/tick").await.1["cron"], "0 3 * * *");
    let (st, l) = s.get("/api/v1/schedules").await;
    assert_eq!((st, l["schedules"].as_array().unwrap().len()), (200, 1));
    for (body, f) in [
        (json!({"cron": "0 25 * * *", "kind": "demo.echo"}), "cron"),
        (json!({"cron": "* * *", "kind": "demo.echo"}), "cron"),
        (json!({"kind": "demo.echo"}), "cron"),
        (json!({"cron": "* * * * *", "kind": "no.such"}), "kind"),
        (
            json!({"cron": "* * * * *", "kind": "demo.echo", "catch_up": "some"}),
            "catch_up",
        ),
        (
            json!({"cron": "* * * * *", "kind": "demo.echo", "run_at": "2030-01-01T00:00:00Z"}),
            "run_at",
        ),
        (
            json!({"cron": "* * * * *", "kind": "demo.echo", "priority": 101}),
            "priority",
        ),
        (
            json!({"cron": "* * * * *", "kind": "demo.echo", "every": 5}),
            "every",
        ),
    ] {
        let (st, e) = put("other", body.clone()).await;
        assert_eq!((st, field(&e)), (422, f), "{body}: {e}");
    }
    let (st, e) = put(
        "Bad%20Name",
        json!({"cron": "* * * * *", "kind": "demo.echo"}),
    )
    .await;
    assert_eq!((st, field(&e)), (422, "name"), "{e}");
    let (st, e) = s
        .call("PUT", "/api/v1/schedules/x", Some("{nope"), None)
        .await;
    assert_eq!(st, 400, "{e}");
    let (st, _) = s.call("DELETE", "/api/v1/schedules/tick", None, None).await;
    assert_eq!(st, 204);
    let (st, e) = s.get("/api/v1/schedules/tick").await;
    assert_eq!((st, code(&e)), (404, "not_found"));
    let (st, _) = s.call("DELETE", "/api/v1/schedules/tick", None, None).await;
    assert_eq!(st, 404);

    // Steps in a task's JSON.
    let (st, t) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.steps", "input": {"n": 2, "ms": 1}, "wait_ms": 10_000}),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    let (_, t) = s
        .get(&format!("/api/v1/tasks/{}", t["id"].as_str().unwrap()))
        .await;
    let steps = t["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{t}");
    assert_eq!(
        (&steps[0]["name"], &steps[0]["state"], &steps[0]["output"]),
        (&json!("step 0"), &json!("succeeded"), &json!(0))
    );
    assert!(steps[1]["started_at"].is_string() && steps[1]["finished_at"].is_string());
    s.stop().await;
}

/// `GET /api/v1/stats`: every state counted (finished included), by queue,
/// and the minutes' finishes; a bad `minutes` is 400 naming it.
async fn stats_over_http(db: &TestDb) {
    let s = Server::start(db, WebConfig::default()).await;
    for i in 0..3 {
        let (st, t) = s
            .post(
                "/api/v1/tasks",
                json!({"kind": "demo.echo", "input": i, "wait_ms": 10000}),
            )
            .await;
        assert_eq!((st, &t["state"]), (200, &json!("succeeded")), "{t}");
    }
    let (st, t) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.fail", "input": "no", "max_attempts": 1, "wait_ms": 10000}),
        )
        .await;
    assert_eq!((st, &t["state"]), (200, &json!("failed")), "{t}");
    let (_, later) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.echo", "input": 0, "queue": "later", "delay_ms": 3_600_000}),
        )
        .await;
    let (_, w) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.echo", "input": 0, "queue": "later", "delay_ms": 3_600_000}),
        )
        .await;
    let id = later["id"].as_str().unwrap();
    let (st, _) = s
        .post(&format!("/api/v1/tasks/{id}/cancel"), json!({}))
        .await;
    assert_eq!(st, 202);

    let (st, stats) = s.get("/api/v1/stats").await;
    assert_eq!(st, 200, "{stats}");
    assert_eq!(
        stats["states"],
        json!({"scheduled": 1, "pending": 0, "running": 0, "suspended": 0,
               "succeeded": 3, "failed": 1, "cancelled": 1}),
        "{stats}"
    );
    let queues = stats["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 2, "{stats}");
    assert_eq!(queues[0]["queue"], "default");
    assert_eq!(
        (
            &queues[0]["states"]["succeeded"],
            &queues[0]["states"]["failed"]
        ),
        (&json!(3), &json!(1))
    );
    assert_eq!(queues[1]["queue"], "later");
    assert_eq!(
        (
            &queues[1]["states"]["scheduled"],
            &queues[1]["states"]["cancelled"]
        ),
        (&json!(1), &json!(1)),
        "{} is still scheduled",
        w["id"]
    );
    let minutes = stats["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    let sum = |k: &str| minutes.iter().map(|m| m[k].as_i64().unwrap()).sum::<i64>();
    assert_eq!(
        (sum("succeeded"), sum("failed"), sum("cancelled")),
        (3, 1, 1)
    );
    let last: chrono::DateTime<chrono::Utc> = minutes[59]["at"].as_str().unwrap().parse().unwrap();
    let age = chrono::Utc::now() - last;
    assert!(
        age >= chrono::Duration::zero() && age < chrono::Duration::seconds(61),
        "{last}"
    );

    let (st, few) = s.get("/api/v1/stats?minutes=5").await;
    assert_eq!((st, few["minutes"].as_array().unwrap().len()), (200, 5));
    for bad in [
        "minutes=0",
        "minutes=181",
        "minutes=x",
        "minutes=1.5",
        "limit=3",
    ] {
        let (st, e) = s.get(&format!("/api/v1/stats?{bad}")).await;
        assert_eq!((st, code(&e)), (400, "invalid_query"), "{bad}: {e}");
    }
    s.stop().await;
}

/// `POST /api/v1/tasks/{id}/retry`: a delayed task starts now, a failed or
/// cancelled root task runs again (one more attempt allowed), anything else
/// is 409, a finished sub-task too.
async fn retry_now_over_http(db: &TestDb) {
    let s = Server::start(db, WebConfig::default()).await;
    let final_state = |id: String| {
        let s = &s;
        async move {
            common::eventually(&format!("{id} to finish"), Duration::from_secs(20), || {
                let path = format!("/api/v1/tasks/{id}");
                async move {
                    let (_, t) = s.get(&path).await;
                    matches!(
                        t["state"].as_str(),
                        Some("succeeded" | "failed" | "cancelled")
                    )
                    .then_some(t)
                }
            })
            .await
        }
    };
    // A task an hour away starts now.
    let (_, later) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.echo", "input": "later", "delay_ms": 3_600_000}),
        )
        .await;
    let id = later["id"].as_str().unwrap().to_string();
    let (st, t) = s
        .post(&format!("/api/v1/tasks/{id}/retry"), json!(null))
        .await;
    assert_eq!(st, 200, "{t}");
    assert!(t["run_at"].is_null(), "{t}");
    assert_eq!(final_state(id.clone()).await["state"], "succeeded");
    // Succeeded: nothing to retry.
    let (st, e) = s
        .post(&format!("/api/v1/tasks/{id}/retry"), json!(null))
        .await;
    assert_eq!((st, code(&e)), (409, "conflict"), "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("succeeded"),
        "{e}"
    );

    // Failed with its one attempt used: runs again, with two allowed.
    let (st, failed) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.fail", "input": "no", "max_attempts": 1, "wait_ms": 10000}),
        )
        .await;
    assert_eq!((st, &failed["state"]), (200, &json!("failed")), "{failed}");
    let id = failed["id"].as_str().unwrap().to_string();
    let (st, t) = s
        .post(&format!("/api/v1/tasks/{id}/retry"), json!(null))
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(
        (&t["max_attempts"], &t["finished_at"]),
        (&json!(2), &Value::Null),
        "{t}"
    );
    let again = final_state(id.clone()).await;
    assert_eq!(
        (&again["state"], &again["attempts"]),
        (&json!("failed"), &json!(2)),
        "{again}"
    );
    assert_eq!(again["errors"].as_array().unwrap().len(), 2, "{again}");

    // Cancelled before it started: runs now.
    let (_, c) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.echo", "input": "back", "delay_ms": 3_600_000}),
        )
        .await;
    let id = c["id"].as_str().unwrap().to_string();
    s.post(&format!("/api/v1/tasks/{id}/cancel"), json!(null))
        .await;
    assert_eq!(final_state(id.clone()).await["state"], "cancelled");
    let (st, _) = s
        .post(&format!("/api/v1/tasks/{id}/retry"), json!(null))
        .await;
    assert_eq!(st, 200);
    let back = final_state(id.clone()).await;
    assert_eq!(
        (&back["state"], &back["output"]),
        (&json!("succeeded"), &json!("back")),
        "{back}"
    );

    // A failed sub-task: its parent heard of it; the parent is what to retry.
    let (_, fan) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.fanout", "input": {"n": 1, "kind": "demo.fail", "input": "x"},
                   "max_attempts": 1, "wait_ms": 10000}),
        )
        .await;
    let parent = fan["id"].as_str().unwrap();
    let (_, kids) = s.get(&format!("/api/v1/tasks/{parent}/children")).await;
    let kid = kids["tasks"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(final_state(kid.clone()).await["state"], "failed");
    let (st, e) = s
        .post(&format!("/api/v1/tasks/{kid}/retry"), json!(null))
        .await;
    assert_eq!((st, code(&e)), (409, "conflict"), "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("parent"),
        "{e}"
    );

    let (st, e) = s
        .post(
            &format!("/api/v1/tasks/{}/retry", uuid::Uuid::now_v7()),
            json!(null),
        )
        .await;
    assert_eq!((st, code(&e)), (404, "not_found"), "{e}");
    let (st, e) = s.post("/api/v1/tasks/nope/retry", json!(null)).await;
    assert_eq!(st, 400, "{e}");
    s.stop().await;
}

/// Every list pages with `limit` and `after`, its rows a page at a time
/// (DESIGN, "HTTP API"): a fan-out's sub-tasks, an inbox, a history, the
/// executors; task rows without `input` and `output` unless `fields` asks;
/// a page that stops before 8 MiB; dead executors pruned by retention.
async fn paging_over_http(db: &TestDb) {
    let s = Server::start(db, WebConfig::default()).await;
    let collect = |path: String, key: &'static str, limit: u32| {
        let s = &s;
        async move {
            let mut rows: Vec<Value> = Vec::new();
            let mut pages = 0;
            let mut after: Option<String> = None;
            loop {
                let sep = if path.contains('?') { '&' } else { '?' };
                let url = match &after {
                    Some(a) => format!("{path}{sep}limit={limit}&after={a}"),
                    None => format!("{path}{sep}limit={limit}"),
                };
                let (st, page) = s.get(&url).await;
                assert_eq!(st, 200, "{url}: {page}");
                let got = page[key].as_array().unwrap().clone();
                assert!(got.len() as u32 <= limit);
                rows.extend(got);
                pages += 1;
                match &page["next"] {
                    Value::String(n) => after = Some(n.clone()),
                    Value::Number(n) => after = Some(n.to_string()),
                    _ => return (rows, pages),
                }
                assert!(pages < 1000, "paging does not end");
            }
        }
    };

    // A fan-out of 250: its sub-tasks in three pages, in spawn order.
    let (st, parent) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.fanout", "input": {"n": 250, "kind": "demo.echo", "input": {"big": "x"}}, "wait_ms": 30000}),
        )
        .await;
    assert_eq!(st, 200, "{parent}");
    let pid = parent["id"].as_str().unwrap().to_string();
    let (kids, pages) = collect(format!("/api/v1/tasks/{pid}/children"), "tasks", 100).await;
    assert_eq!((kids.len(), pages), (250, 3));
    let mut ids: Vec<&str> = kids.iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert!(
        kids.iter().all(|k| k.get("input").is_none()
            && k.get("output").is_none()
            && k["state"] == "succeeded"),
        "{}",
        kids[0]
    );
    let (st, all) = s
        .get(&format!(
            "/api/v1/tasks/{pid}/children?limit=1000&fields=all"
        ))
        .await;
    assert_eq!(st, 200);
    let in_order: Vec<&str> = all["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, in_order, "pages follow spawn order");
    assert_eq!(all["tasks"][0]["input"], json!({"big": "x"}));
    assert_eq!(all["next"], Value::Null);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 250, "no sub-task twice");
    let (st, some) = s
        .get(&format!(
            "/api/v1/tasks/{pid}/children?limit=2&fields=state,output"
        ))
        .await;
    assert_eq!(st, 200);
    let row = some["tasks"][0].as_object().unwrap();
    let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["id", "output", "state"]);
    for bad in [
        "fields=bogus",
        "limit=0",
        "limit=1001",
        "after=nope",
        "after=",
    ] {
        let (st, e) = s.get(&format!("/api/v1/tasks/{pid}/children?{bad}")).await;
        assert_eq!((st, code(&e)), (400, "invalid_query"), "{bad}: {e}");
    }
    let (st, e) = s.get(&format!("/api/v1/tasks/{pid}/history?after=x")).await;
    assert_eq!((st, code(&e)), (400, "invalid_query"), "{e}");
    // The task list: rows without bodies by default, the default page 100.
    let (st, l) = s.get("/api/v1/tasks").await;
    assert_eq!(st, 200);
    assert_eq!(l["tasks"].as_array().unwrap().len(), 100);
    assert!(l["tasks"][0].get("input").is_none(), "{}", l["tasks"][0]);
    assert!(l["next"].is_string());

    // An inbox of 150 events, in two pages, in order.
    let (_, waiting) = s
        .post(
            "/api/v1/tasks",
            json!({"kind": "demo.echo", "input": 1, "queue": "nobody-serves"}),
        )
        .await;
    let wid = waiting["id"].as_str().unwrap().to_string();
    for i in 0..150 {
        let (st, _) = s
            .post(
                &format!("/api/v1/tasks/{wid}/events"),
                json!({"name": "e", "payload": i}),
            )
            .await;
        assert_eq!(st, 202);
    }
    let (events, pages) = collect(format!("/api/v1/tasks/{wid}/events"), "events", 100).await;
    assert_eq!((events.len(), pages), (150, 2));
    let payloads: Vec<i64> = events
        .iter()
        .map(|e| e["payload"].as_i64().unwrap())
        .collect();
    assert_eq!(payloads, (0..150).collect::<Vec<_>>());
    // A history, a line a page.
    let (whole, _) = collect(format!("/api/v1/tasks/{pid}/history"), "history", 1000).await;
    let (lines, pages) = collect(format!("/api/v1/tasks/{pid}/history"), "history", 1).await;
    assert_eq!(lines, whole);
    assert_eq!(pages, whole.len());

    // A page stops before 8 MiB: twelve tasks of 900 kB inputs.
    let big = "y".repeat(900_000);
    for _ in 0..12 {
        let (st, t) = s
            .post(
                "/api/v1/tasks",
                json!({"kind": "demo.echo", "input": big, "queue": "big"}),
            )
            .await;
        assert_eq!(st, 201, "{t}");
    }
    let (st, p1) = s.get("/api/v1/tasks?queue=big&fields=all&limit=1000").await;
    assert_eq!(st, 200);
    let n1 = p1["tasks"].as_array().unwrap().len();
    assert!((1..12).contains(&n1), "{n1} rows of 900 kB in one page");
    assert!(p1.to_string().len() <= 8 << 20);
    let (rows, _) = collect("/api/v1/tasks?queue=big&fields=all".into(), "tasks", 1000).await;
    assert_eq!(rows.len(), 12);

    // Executors: paged, newest first; dead ones pruned by retention.
    let store = db.store().await;
    for i in 0..3 {
        let reg = courier_store::ExecutorRegistration {
            id: format!("gone-{i}"),
            node: "gone".into(),
            host: "h".into(),
            pid: 1,
            process: None,
            offer: Default::default(),
            capacity: 1,
        };
        store.register_executor(&reg).await.unwrap();
        store.declare_dead(&reg.id, "test").await.unwrap();
    }
    let (execs, pages) = collect("/api/v1/executors".into(), "executors", 2).await;
    assert_eq!((execs.len(), pages), (4, 2));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let pruned = store
        .delete_expired_executors(Duration::from_millis(10), 1000)
        .await
        .unwrap();
    assert_eq!(pruned, 3);
    let (st, e) = s.get("/api/v1/executors").await;
    assert_eq!(st, 200);
    assert_eq!(e["executors"].as_array().unwrap().len(), 1, "{e}");
    assert_eq!(e["executors"][0]["state"], "alive");
    s.stop().await;
}

on_both_databases!(
    paging_over_http,
    retry_now_over_http,
    stats_over_http,
    the_api_end_to_end,
    bearer_tokens_guard_the_api,
    queue_semantics_over_http,
    schedules_and_steps_over_http
);

/// `/metrics` as a Prometheus scraper reads it: parsed by a strict
/// OpenMetrics parser (every line, the `# EOF`, each family's type), with
/// the families an operator looks for and values that make sense after a
/// `demo.echo` task has run.
fn check_openmetrics(text: &str) {
    use openmetrics_parser::{OpenMetricsType, OpenMetricsValue};
    let exposition = openmetrics_parser::openmetrics::parse_openmetrics(text)
        .unwrap_or_else(|e| panic!("/metrics is not valid OpenMetrics ({e:?}):\n{text}"));
    let family = |name: &str, kind: OpenMetricsType| {
        let f = exposition
            .families
            .get(name)
            .unwrap_or_else(|| panic!("/metrics lacks {name}:\n{text}"));
        assert_eq!(f.family_type, kind, "{name}");
        assert!(!f.help.is_empty(), "{name} has no help");
        f
    };
    let label = |s: &openmetrics_parser::Sample<OpenMetricsValue>, l: &str| {
        s.get_labelset()
            .ok()
            .and_then(|set| set.get_label_value(l).map(str::to_string))
    };
    let counter = |name: &str, l: &str, v: &str| -> f64 {
        family(name, OpenMetricsType::Counter)
            .iter_samples()
            .filter(|s| label(s, l).as_deref() == Some(v))
            .map(|s| match &s.value {
                OpenMetricsValue::Counter(c) => c.value.as_f64(),
                other => panic!("{name}: {other:?}"),
            })
            .sum()
    };
    let histogram_count = |name: &str, label_value: Option<(&str, &str)>| -> u64 {
        family(name, OpenMetricsType::Histogram)
            .iter_samples()
            .filter(|s| label_value.is_none_or(|(l, v)| label(s, l).as_deref() == Some(v)))
            .map(|s| match &s.value {
                OpenMetricsValue::Histogram(h) => {
                    let n = h.count.unwrap_or(0);
                    // Buckets are cumulative and end with +Inf = count.
                    let last = h.buckets.last().expect("buckets");
                    assert!(last.upper_bound.is_infinite(), "{name}: {h:?}");
                    assert_eq!(last.count.as_f64() as u64, n, "{name}: {h:?}");
                    assert!(h
                        .buckets
                        .windows(2)
                        .all(|w| w[0].count.as_f64() <= w[1].count.as_f64()));
                    n
                }
                other => panic!("{name}: {other:?}"),
            })
            .sum()
    };
    assert!(counter("courier_tasks_created", "kind", "demo.echo") >= 1.0);
    assert!(counter("courier_tasks_finished", "state", "succeeded") >= 1.0);
    assert!(histogram_count("courier_dispatch_latency_seconds", None) >= 1);
    assert!(histogram_count("courier_run_duration_seconds", Some(("kind", "demo.echo"))) >= 1);
    assert!(histogram_count("courier_claim_batch_size", None) >= 1);
    assert!(histogram_count("courier_queue_wait_seconds", Some(("queue", "default"))) >= 1);
    family("courier_takeovers", OpenMetricsType::Counter);
    family("courier_bus_mailbox_full", OpenMetricsType::Counter);
    let lanes: Vec<String> = family("courier_store_writes_held", OpenMetricsType::Gauge)
        .iter_samples()
        .filter_map(|s| label(s, "lane"))
        .collect();
    assert_eq!(lanes.len(), 3, "{lanes:?}");
    family("courier_fenced_writes", OpenMetricsType::Counter);
    family("courier_tasks_running", OpenMetricsType::Gauge);
    let pending = family("courier_tasks", OpenMetricsType::Gauge)
        .iter_samples()
        .filter(|s| label(s, "state").as_deref() == Some("pending"))
        .count();
    assert_eq!(pending, 1, "one courier_tasks sample for pending");
    family("courier_queue_tasks", OpenMetricsType::Gauge);
    family("courier_store_up", OpenMetricsType::Gauge);
}
