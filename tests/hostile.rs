//! Arbitrary input through the HTTP API, on both databases (issue 23): a
//! property test sends arbitrary JSON values as a task's `input` and an
//! event's `payload`, and arbitrary strings as event names and idempotency
//! keys, to a real `courier serve`. Whatever it sends, the answer is never
//! a 5xx; a refusal is a 422 naming the field; and what was taken comes
//! back equal when read.
//!
//! The tasks go to a queue no executor serves, so they stay `pending` and
//! take events (an event to a finished task is a 409, which would say
//! nothing here).

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use common::procs::{http, Proc};

/// Arbitrary JSON: every kind of value, strings of any Unicode (U+0000
/// included), object keys likewise, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        // Strings a person would send, NUL now and then.
        "[a-z\\x00 é😀]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A name or key: short, long, empty, NUL, anything.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9:._-]{1,40}",
        any::<String>(),
        "[a-z\\x00]{0,8}",
        "[a-z]{250,300}",
    ]
}

/// Whether `v` holds U+0000 in a string or a key.
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Numbers compared as numbers (an integer sent as `5` may be read back as
/// `5.0` from a float the database kept, and the other way round).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || (x.as_f64().is_some() && x.as_f64() == y.as_f64())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn arbitrary_json_never_breaks_the_api(db: &str) {
    let server = Proc::start("hostile", &["serve", "--demo", "--db", db]);
    let addr = server.http.clone().unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(json_value(), json_value(), text(), text()),
            |(input, payload, name, key)| {
                let body = json!({"kind": "demo.echo", "input": input, "queue": "nobody-serves",
                                  "idempotency_key": key});
                let (st, t) = http(&addr, "POST", "/api/v1/tasks", Some(&body.to_string()));
                prop_assert!(st < 500, "create answered {st}: {t}");
                let key_ok = !key.is_empty() && key.len() <= 256 && !key.contains('\0');
                if has_nul(&input) || !key_ok {
                    prop_assert_eq!(st, 422, "{}", t);
                    let field = t["error"]["field"].as_str().unwrap_or_default();
                    prop_assert!(
                        field == "input" || field == "idempotency_key",
                        "422 names {field}: {t}"
                    );
                    return Ok(());
                }
                // 200: the key was drawn before (the first task comes back).
                prop_assert!(st == 201 || st == 200, "create answered {st}: {t}");
                let id = t["id"].as_str().unwrap().to_string();
                let (st, read) = http(&addr, "GET", &format!("/api/v1/tasks/{id}"), None);
                prop_assert_eq!(st, 200);
                if t["input"] == input || st == 201 {
                    prop_assert!(
                        same(&read["input"], &t["input"]),
                        "stored {} came back {}",
                        t["input"],
                        read["input"]
                    );
                }
                if st == 201 {
                    prop_assert!(
                        same(&read["input"], &input),
                        "sent {input}, read {}",
                        read["input"]
                    );
                }
                let ev = json!({"name": name, "payload": payload});
                let (st, e) = http(
                    &addr,
                    "POST",
                    &format!("/api/v1/tasks/{id}/events"),
                    Some(&ev.to_string()),
                );
                prop_assert!(st < 500, "event answered {st}: {e}");
                let name_ok = !name.is_empty() && name.len() <= 128 && !name.contains('\0');
                if !name_ok || has_nul(&payload) {
                    prop_assert_eq!(st, 422, "{}", e);
                    let field = e["error"]["field"].as_str().unwrap_or_default();
                    prop_assert!(
                        field == "name" || field == "payload",
                        "422 names {field}: {e}"
                    );
                    return Ok(());
                }
                prop_assert_eq!(st, 202, "{}", e);
                let (st, events) = http(&addr, "GET", &format!("/api/v1/tasks/{id}/events"), None);
                prop_assert_eq!(st, 200);
                let last = events["events"].as_array().and_then(|l| l.last()).cloned();
                let last = last.unwrap_or_default();
                prop_assert_eq!(&last["name"], &json!(name));
                prop_assert!(
                    same(&last["payload"], &payload),
                    "sent {payload}, read {}",
                    last["payload"]
                );
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn arbitrary_json_never_breaks_the_api_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    arbitrary_json_never_breaks_the_api(&format!("sqlite://{}", dir.path().join("h.db").display()));
}

#[test]
fn arbitrary_json_never_breaks_the_api_on_postgres() {
    on_postgres(arbitrary_json_never_breaks_the_api);
}

/// Runs `test` with the URL of a PostgreSQL schema of its own (dropped
/// after).
fn on_postgres(test: impl FnOnce(&str)) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(common::TestDb::postgres());
    test(&db.process_url());
    drop(db);
}

/// Numbers in a task's input and an event's payload come back exactly as
/// sent, digits included: integers past 2^64, decimals longer than a
/// double holds, trailing zeros (DESIGN, "HTTP API").
fn numbers_are_kept_exactly(db: &str) {
    let server = Proc::start("numbers", &["serve", "--demo", "--db", db]);
    let addr = server.http.clone().unwrap();
    let exact = r#"{"big":1180591620717411303424,"neg":-1180591620717411303424,"pi":3.141592653589793238462643383279,"cents":0.10,"max":18446744073709551616,"list":[100000000000000000000000000000001,0.30000000000000000000000000000004]}"#;
    let body = format!(r#"{{"kind": "demo.echo", "queue": "nobody-serves", "input": {exact}}}"#);
    // Compared as values whose numbers are their digits (serde_json's
    // arbitrary_precision is on in this build): keys may come back in
    // another order, digits may not.
    let sent: Value = serde_json::from_str(exact).unwrap();
    assert_eq!(sent["big"].to_string(), "1180591620717411303424");
    let (st, t) = http(&addr, "POST", "/api/v1/tasks", Some(&body));
    assert_eq!(st, 201, "{t}");
    assert_eq!(t["input"], sent, "the create's answer");
    let id = t["id"].as_str().unwrap();
    let (_, read) = http(&addr, "GET", &format!("/api/v1/tasks/{id}"), None);
    assert_eq!(read["input"], sent, "read back");
    let ev = format!(r#"{{"name": "n", "payload": {exact}}}"#);
    let (st, e) = http(
        &addr,
        "POST",
        &format!("/api/v1/tasks/{id}/events"),
        Some(&ev),
    );
    assert_eq!(st, 202, "{e}");
    let (_, events) = http(&addr, "GET", &format!("/api/v1/tasks/{id}/events"), None);
    assert_eq!(events["events"][0]["payload"], sent);
    // The API's own fields still read floats however they are written.
    let (st, q) = http(
        &addr,
        "PUT",
        "/api/v1/queues/nobody-serves",
        Some(r#"{"rate_per_s": 25e-1, "concurrency": 3.0}"#),
    );
    assert_eq!(st, 200, "{q}");
    assert_eq!(q["rate_per_s"].as_f64(), Some(2.5));
    assert_eq!(q["concurrency"].as_i64(), Some(3));
}

#[test]
fn numbers_are_kept_exactly_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    numbers_are_kept_exactly(&format!("sqlite://{}", dir.path().join("n.db").display()));
}

#[test]
fn numbers_are_kept_exactly_on_postgres() {
    on_postgres(numbers_are_kept_exactly);
}
