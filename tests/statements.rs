//! SQL kept honest (issue 25, point 5): every statement the store sends
//! is a named entry of its catalogue (`store/src/sql/statements.rs`,
//! listed by `Store::statements`), and each one is prepared here on both
//! databases after the migrations. A statement that no longer parses, or
//! names a table or column the migrations dropped, fails this test by its
//! name, not a deployment.
//!
//! PostgreSQL infers each parameter's type from the statement. Where it
//! cannot alone (a parameter first met in `$1 IS NULL`, or one used where
//! two types would fit), the store's binds give it the type at run time;
//! here [`PG_PARAM_TYPES`] gives those statements the types the store
//! binds (a prefix of their parameters; the rest are inferred).
//!
//! Two more checks keep the catalogue complete, by reading the store's
//! source:
//!
//! - [`no_sql_outside_the_catalogue`]: outside `statements.rs`, no line of
//!   code in `store/src/sql/` (comments aside) has an SQL keyword as a
//!   whole upper-case word (`SELECT`, `INSERT`, `UPDATE`, `DELETE`,
//!   `WHERE`, `FROM`, `JOIN`, `SET`, `VALUES`, `RETURNING`, `PRAGMA`). SQL
//!   is written in upper case throughout the store, and Rust code has no
//!   such words, so SQL text spelled at a call site, in a string literal
//!   or a `format!`, is found whatever the call that sends it. Transaction
//!   control (`BEGIN`, `BEGIN IMMEDIATE`, `commit`) is left at the call
//!   sites: it has no keyword of the list.
//! - [`every_statement_is_in_the_catalogue`]: every `const …: &str` and
//!   `fn` of the per-file modules of `statements.rs` (`pub(crate) mod
//!   tasks { … }`) is listed by the catalogue for at least one dialect, so no statement
//!   escapes being prepared.

mod common;

use std::collections::BTreeSet;

use common::TestDb;
use courier_store::{Dialect, Store};
use sqlx::postgres::PgTypeInfo;
use sqlx::{Connection, Executor};

/// The types the store binds to the first parameters of the statements
/// (by catalogue name, shape aside) whose parameter types PostgreSQL
/// cannot infer from their text alone.
const PG_PARAM_TYPES: &[(&str, &[&str])] = &[
    ("tasks::children_page", &["uuid", "uuid"]),
    ("executors::page", &["text"]),
    ("stats::counts", &["text"]),
    ("stats::by_queue", &["text"]),
    ("queues::SETTINGS", &["text"]),
    (
        "creates::insert_started",
        &[
            "uuid",
            "text",
            "text",
            "jsonb",
            "text",
            "text",
            "text",
            "timestamptz",
            "text",
            "int4",
            "timestamptz",
            "int4",
            "int8",
            "int8",
            "text",
            "text",
            "text",
        ],
    ),
];

/// Prepares every catalogued statement of `dialect` on `db` (migrated
/// first) and fails naming each one that does not prepare.
async fn prepare_all(db: &TestDb, dialect: Dialect) {
    let store = db.store().await;
    assert_eq!(store.dialect(), dialect);
    store.close().await;
    let statements = Store::statements(dialect);
    assert!(
        statements.len() > 10,
        "a catalogue that small is not the store's"
    );
    let mut failed: Vec<String> = Vec::new();
    match dialect {
        Dialect::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            for (name, sql) in &statements {
                if let Err(e) = (&mut conn).prepare(sql.as_str()).await {
                    failed.push(format!("{name}: {e}\n    {sql}"));
                }
            }
            conn.close().await.unwrap();
        }
        Dialect::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let schema = db.options.pg_schema.clone().expect("a test schema");
            conn.execute(format!("SET search_path TO {schema}").as_str())
                .await
                .unwrap();
            for (name, sql) in &statements {
                let path = name.split('(').next().unwrap_or(name).trim();
                let types: Vec<PgTypeInfo> = PG_PARAM_TYPES
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, ts)| ts.iter().map(|t| PgTypeInfo::with_name(t)).collect())
                    .unwrap_or_default();
                if let Err(e) = (&mut conn).prepare_with(sql.as_str(), &types).await {
                    failed.push(format!("{name}: {e}\n    {sql}"));
                }
            }
            conn.close().await.unwrap();
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} statements do not prepare on {dialect:?}:\n{}",
        failed.len(),
        statements.len(),
        failed.join("\n")
    );
}

#[actix::test]
async fn every_statement_prepares_on_sqlite() {
    let db = TestDb::sqlite().await;
    prepare_all(&db, Dialect::Sqlite).await;
    db.cleanup().await;
}

#[actix::test]
async fn every_statement_prepares_on_postgres() {
    let db = TestDb::postgres().await;
    prepare_all(&db, Dialect::Postgres).await;
    db.cleanup().await;
}

const SQL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/store/src/sql");

/// Upper-case words that only SQL has.
const KEYWORDS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "WHERE",
    "FROM",
    "JOIN",
    "SET",
    "VALUES",
    "RETURNING",
    "PRAGMA",
];

#[test]
fn no_sql_outside_the_catalogue() {
    let mut found: Vec<String> = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(SQL_DIR)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    assert!(files.len() > 10, "no sources in {SQL_DIR}?");
    for path in files {
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        if file == "statements.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let words: BTreeSet<&str> = line
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .collect();
            if let Some(k) = KEYWORDS.iter().find(|k| words.contains(*k)) {
                found.push(format!("{file}:{}: {k}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "SQL spelled outside store/src/sql/statements.rs (name it there):\n{}",
        found.join("\n")
    );
}

#[test]
fn every_statement_is_in_the_catalogue() {
    let text = std::fs::read_to_string(format!("{SQL_DIR}/statements.rs")).unwrap();
    let listed: Vec<String> = [Dialect::Sqlite, Dialect::Postgres]
        .into_iter()
        .flat_map(Store::statements)
        .map(|(name, _)| name.split_whitespace().collect::<String>())
        .collect();
    let mut module: Option<String> = None;
    let mut items = 0;
    let mut missing: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("pub(crate) mod ") {
            module = Some(rest.trim_end_matches(" {").to_string());
            continue;
        }
        if line == "}" {
            module = None;
            continue;
        }
        let Some(module) = &module else { continue };
        let ident = |item: &str| -> String {
            item.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let ident = if let Some(item) = line.strip_prefix("    pub(crate) fn ") {
            ident(item)
        } else if let Some(item) = line.strip_prefix("    pub(crate) const ") {
            let name = ident(item);
            if !item[name.len()..].starts_with(": &str") {
                continue; // not a statement (a list of tables, …)
            }
            name
        } else {
            continue;
        };
        let path = format!("{module}::{ident}");
        items += 1;
        let is_listed = listed.iter().any(|name| {
            name.strip_prefix(&path)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('('))
        });
        if !is_listed {
            missing.push(path);
        }
    }
    assert!(items > 10, "no statements found in statements.rs?");
    assert!(
        missing.is_empty(),
        "statements not in the catalogue (`catalogue` in statements.rs): {missing:?}"
    );
}
