//! What intake remembers about recent jobs: last status (for `job.status_changed`'s
//! `old_status`), and type and priority from the submission (so `job_types` and `job_priorities`
//! filters also judge later events of the job, which do not carry those fields).

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

/// Most jobs remembered; the oldest are forgotten first.
const MAX_JOBS: usize = 100_000;

#[derive(Debug, Default, Clone)]
struct Job {
    status: Option<&'static str>,
    job_type: Option<String>,
    priority: Option<Value>,
}

/// Recent jobs, bounded.
#[derive(Debug, Default)]
pub struct JobTracker {
    jobs: HashMap<String, Job>,
    order: VecDeque<String>,
}

impl JobTracker {
    /// Records a lifecycle step; returns the previous status if it differs from `new_status`
    /// (`Some(None)`: changed, previous unknown), or `None` if the status did not change.
    pub fn transition(
        &mut self,
        job_id: &str,
        new_status: &'static str,
        job_type: Option<String>,
        priority: Option<Value>,
    ) -> Option<Option<&'static str>> {
        let job = self.entry(job_id);
        if job_type.is_some() {
            job.job_type = job_type;
        }
        if priority.is_some() {
            job.priority = priority;
        }
        let old = job.status.replace(new_status);
        (old != Some(new_status)).then_some(old)
    }

    /// The type and priority a submission gave this job.
    pub fn known(&self, job_id: &str) -> (Option<String>, Option<Value>) {
        self.jobs
            .get(job_id)
            .map(|j| (j.job_type.clone(), j.priority.clone()))
            .unwrap_or_default()
    }

    fn entry(&mut self, job_id: &str) -> &mut Job {
        if !self.jobs.contains_key(job_id) {
            while self.order.len() >= MAX_JOBS {
                if let Some(oldest) = self.order.pop_front() {
                    self.jobs.remove(&oldest);
                }
            }
            self.order.push_back(job_id.to_string());
        }
        self.jobs.entry(job_id.to_string()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_report_the_previous_status() {
        let mut t = JobTracker::default();
        assert_eq!(
            t.transition("j", "pending", Some("comfyui".into()), None),
            Some(None)
        );
        assert_eq!(
            t.transition("j", "in_progress", None, None),
            Some(Some("pending"))
        );
        assert_eq!(t.transition("j", "in_progress", None, None), None);
        assert_eq!(t.known("j").0.as_deref(), Some("comfyui"));
    }
}
