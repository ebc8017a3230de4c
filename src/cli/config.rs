//! The config file: a TOML file whose keys are the long options of any
//! `courier` command (`db = "postgres://…"`, `queues = ["default", "mail"]`,
//! `demo = true`, `log-format = "json"`), named by `--config PATH` or
//! `COURIER_CONFIG`.
//!
//! **One precedence rule**: the command line wins over the environment
//! (`COURIER_*`), which wins over the config file, which wins over the
//! built-in default. It is kept by giving each key of the file to clap as
//! the option's `COURIER_*` variable when the environment does not set it
//! already, so clap applies the rule for every option in one place.
//!
//! A key that is no option of any command, or a value that is not a
//! string, number, boolean or array of those, is refused with the key
//! named: a typo never goes unnoticed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::CommandFactory;

use super::Cli;

/// The config file named on the command line (`--config PATH`,
/// `--config=PATH`) or by `COURIER_CONFIG`, if any.
fn named(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(path) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("COURIER_CONFIG").map(PathBuf::from)
}

/// Every long option of every command that has a `COURIER_*` variable:
/// option name → variable.
fn options() -> BTreeMap<String, String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeMap<String, String>) {
        for arg in cmd.get_arguments() {
            if let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) {
                out.insert(long.to_string(), env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(&Cli::command(), &mut out);
    out.remove("config");
    out
}

/// A TOML value as an option's text: arrays become comma-separated lists
/// (the form `--queues`, `--bus` and `--kinds` take).
fn text(key: &str, v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                toml::Value::Array(_) | toml::Value::Table(_) => Err(anyhow!(
                    "`{key}`: an array holds strings, numbers or booleans"
                )),
                other => text(key, other),
            })
            .collect::<anyhow::Result<Vec<_>>>()?
            .join(","),
        toml::Value::Table(_) | toml::Value::Datetime(_) => {
            bail!("`{key}`: expected a string, number, boolean or array")
        }
    })
}

/// The `COURIER_*` variables the file at `path` gives: (variable, value).
pub fn read(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let body =
        std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
    let table: toml::Table = body
        .parse()
        .with_context(|| format!("config file {}", path.display()))?;
    let known = options();
    let mut out = Vec::with_capacity(table.len());
    for (key, value) in &table {
        let env = known.get(key).ok_or_else(|| {
            anyhow!(
                "config file {}: `{key}` is no option of courier (keys are long options without `--`, e.g. `db`, `listen`, `queues`)",
                path.display()
            )
        })?;
        let value = text(key, value).with_context(|| format!("config file {}", path.display()))?;
        out.push((env.clone(), value));
    }
    Ok(out)
}

/// Reads the config file named by `args` or `COURIER_CONFIG`, if any, and
/// sets each of its options' `COURIER_*` variable that the environment does
/// not set. Call before parsing the command line, while the process has
/// one thread.
pub fn apply(args: &[OsString]) -> anyhow::Result<()> {
    let Some(path) = named(args) else {
        return Ok(());
    };
    for (env, value) in read(&path)? {
        if std::env::var_os(&env).is_none() {
            std::env::set_var(env, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(body: &str) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(body.as_bytes()).unwrap();
        f
    }

    #[test]
    fn keys_are_long_options_and_arrays_are_lists() {
        let f = file(
            "db = \"postgres://u@h/db\"\nqueues = [\"default\", \"mail\"]\ndemo = true\ncapacity = 64\nlog-format = \"json\"\n",
        );
        let mut got = read(f.path()).unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("COURIER_CAPACITY".to_string(), "64".to_string()),
                ("COURIER_DB".into(), "postgres://u@h/db".into()),
                ("COURIER_DEMO".into(), "true".into()),
                ("COURIER_LOG_FORMAT".into(), "json".into()),
                ("COURIER_QUEUES".into(), "default,mail".into()),
            ]
        );
    }

    #[test]
    fn a_key_that_is_no_option_is_refused_by_name() {
        let f = file("db = \"sqlite://x.db\"\nlisten_on = \"0.0.0.0:1\"\n");
        let e = format!("{:#}", read(f.path()).unwrap_err());
        assert!(e.contains("`listen_on` is no option"), "{e}");
        let f = file("retain = { succeeded = \"1d\" }\n");
        let e = format!("{:#}", read(f.path()).unwrap_err());
        assert!(e.contains("`retain`"), "{e}");
        let f = file("db = \n");
        assert!(read(f.path()).is_err());
    }

    /// The example in deploy/ stays a file courier accepts.
    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/courier.toml");
        let got = read(&path).unwrap();
        assert!(got.contains(&(
            "COURIER_BUS".to_string(),
            "amqp://courier:secret@mq.internal:5672/courier,socket:/run/courier".to_string()
        )));
        assert!(got.contains(&("COURIER_LOG_FORMAT".to_string(), "json".to_string())));
    }

    #[test]
    fn the_file_is_named_by_flag_or_variable() {
        let args: Vec<OsString> = ["courier", "serve", "--config", "/etc/c.toml"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(named(&args), Some(PathBuf::from("/etc/c.toml")));
        let args: Vec<OsString> = ["courier", "--config=/x.toml", "serve"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(named(&args), Some(PathBuf::from("/x.toml")));
    }
}
