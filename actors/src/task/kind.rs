//! Task kinds: the code an embedding program registers under a name.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use super::context::TaskContext;
use crate::error::TaskError;
use courier_store::validate_kind_name;
use courier_store::TaskOptions;

/// What a run returns: its output, or why it did not produce one.
pub type TaskResult = Result<Value, TaskError>;

/// The future a run is.
pub type TaskFuture = Pin<Box<dyn Future<Output = TaskResult> + Send + 'static>>;

/// Code that runs tasks of one kind.
///
/// A run may be executed more than once: after its executor dies, or after
/// the process restarts, the task runs again from the start with a higher
/// [`attempt`](TaskContext::attempt). Everything done through the context is
/// replayed rather than repeated (sub-task `n` is the same sub-task, events
/// already received are received again at once), so a run that does its side
/// effects through sub-tasks and events is safe to repeat.
///
/// Closures `Fn(TaskContext) -> impl Future<Output = TaskResult>` are task kinds.
pub trait TaskKind: Send + Sync + 'static {
    /// Runs one task.
    fn run(&self, ctx: TaskContext) -> TaskFuture;
}

impl<F, Fut> TaskKind for F
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskResult> + Send + 'static,
{
    fn run(&self, ctx: TaskContext) -> TaskFuture {
        Box::pin(self(ctx))
    }
}

/// A registered kind: its code and its default options.
#[derive(Clone)]
struct Entry {
    kind: Arc<dyn TaskKind>,
    defaults: TaskOptions,
}

/// Task kinds by name, each with its default options.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Entry>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `kind` under `name`, replacing any earlier registration.
    ///
    /// # Panics
    /// When `name` is not a valid kind name (see [`validate_kind_name`]): a
    /// programming error, found on the first run.
    pub fn register(&mut self, name: impl Into<String>, kind: impl TaskKind) -> &mut Self {
        self.register_with(name, kind, TaskOptions::default())
    }

    /// Registers `kind` under `name` with default options for its tasks
    /// (queue, priority, `max_attempts`, backoff, timeout): a task that
    /// does not set an option gets the kind's. Every node applies them, a
    /// web node that does not run the kind too (executors record them).
    ///
    /// # Panics
    /// When `name` is not a valid kind name, or `defaults` holds a bad value
    /// or a delay: a programming error, found on the first run.
    pub fn register_with(
        &mut self,
        name: impl Into<String>,
        kind: impl TaskKind,
        defaults: TaskOptions,
    ) -> &mut Self {
        let name = name.into();
        if let Err(e) = validate_kind_name(&name) {
            panic!("{e}");
        }
        if let Err(e) = defaults.validate_as_defaults() {
            panic!("default options of kind {name:?}: {e}");
        }
        self.kinds.insert(
            name,
            Entry {
                kind: Arc::new(kind),
                defaults,
            },
        );
        self
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn TaskKind>> {
        self.kinds.get(name).map(|e| e.kind.clone())
    }

    /// The default options of a kind (empty for an unknown one).
    pub fn defaults(&self, name: &str) -> TaskOptions {
        self.kinds
            .get(name)
            .map(|e| e.defaults.clone())
            .unwrap_or_default()
    }

    /// Every kind's default options, by name.
    pub fn all_defaults(&self) -> BTreeMap<String, TaskOptions> {
        self.kinds
            .iter()
            .map(|(k, e)| (k.clone(), e.defaults.clone()))
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.kinds.contains_key(name)
    }

    /// A registry with only the named kinds of this one.
    pub fn only(&self, names: &[&str]) -> Registry {
        Registry {
            kinds: self
                .kinds
                .iter()
                .filter(|(k, _)| names.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.kinds.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}
