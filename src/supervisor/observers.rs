//! The observers every service registers on its run events: the task log, the metrics, the
//! result store and the retention of ended sessions. Each one only records or queues, so none
//! can hold a run up.

use std::sync::Arc;

use super::events::{Observer, RunEvent, RunInfo};
use super::view;
use crate::sessions::Retained;
use crate::store::{Record, Start, Store};

/// Writes a run's start and end into its task's log.
pub struct TaskLogLines;

impl Observer for TaskLogLines {
    fn observe(&self, event: &RunEvent) {
        match event {
            RunEvent::Started(info) if info.is_builtin() => info.log.event(
                info.id,
                format_args!("start /{} with {}", info.task.path, info.args),
            ),
            RunEvent::Started(info) => info.log.event(
                info.id,
                format_args!("start /{}: {}", info.task.path, info.command),
            ),
            RunEvent::Output { .. } => {}
            RunEvent::Ended {
                info, result, took, ..
            } if result.ok => {
                info.log.event(info.id, format_args!("done in {took:.3?}"));
            }
            RunEvent::Ended {
                info, result, took, ..
            } => info.log.event(
                info.id,
                format_args!("failed in {took:.3?}: {}", result.msg),
            ),
        }
    }
}

/// Counts runs started, running and ended, and how long they took.
pub struct RunMetrics;

impl Observer for RunMetrics {
    fn observe(&self, event: &RunEvent) {
        match event {
            RunEvent::Started(info) => crate::metrics::run_started(&info.task.name),
            RunEvent::Output { .. } => {}
            RunEvent::Ended {
                info, result, took, ..
            } => {
                crate::metrics::run_ended(&info.task.name, result.outcome(), *took);
            }
        }
    }
}

/// Queues every run's record: `running` at its start, replaced by the result at its end.
pub struct StoreRecords(pub Arc<Store>);

impl StoreRecords {
    fn record(&self, info: &RunInfo) -> Record {
        let mut record = Record::started(
            Start {
                session: info.id,
                task: &info.task.name,
                cluster_type: &info.task.cluster_type,
                path: &info.task.path,
                is_async: info.is_async(),
                args: info.args.clone(),
                command: info.command.clone(),
            },
            self.0.owner(),
        );
        record.start_ms = info.start_at.timestamp_millis();
        record
    }
}

impl Observer for StoreRecords {
    fn observe(&self, event: &RunEvent) {
        match event {
            RunEvent::Started(info) => self.0.put(self.record(info)),
            RunEvent::Output { .. } => {}
            RunEvent::Ended { info, result, .. } => self.0.put(self.record(info).ended(result)),
        }
    }
}

/// Keeps an ended async session for `/async/query` until its retention has passed.
pub struct EndedSessions(pub Arc<Retained>);

impl Observer for EndedSessions {
    fn observe(&self, event: &RunEvent) {
        if let RunEvent::Ended {
            info,
            result,
            end_at,
            ..
        } = event
        {
            if info.is_async() {
                self.0.insert(view::ended(info, result, *end_at));
            }
        }
    }
}
