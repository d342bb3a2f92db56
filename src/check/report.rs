//! The preflight's findings and how they are printed: one line each, or
//! one JSON object.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

/// How long the TPM and each peer get to answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A finding's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works as configured.
    Ok,
    /// Works, but not as an operator probably wants.
    Warn,
    /// The agent will not start or not attest.
    Fail,
}

impl Status {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        }
    }
}

/// One checked item.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What was checked (`tpm`, `registrar`, …).
    pub item: &'static str,
    /// The verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about a WARN or FAIL.
    pub fix: Option<String>,
}

impl Finding {
    pub(super) fn ok(item: &'static str, detail: impl Into<String>) -> Self {
        Self {
            item,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(super) fn warn(
        item: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::with_fix(item, Status::Warn, detail.into(), fix.into())
    }

    pub(super) fn fail(
        item: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::with_fix(item, Status::Fail, detail.into(), fix.into())
    }

    fn with_fix(item: &'static str, status: Status, detail: String, fix: String) -> Self {
        Self {
            item,
            status,
            detail,
            fix: Some(fix),
        }
    }
}

/// Every finding, in the order checked.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether nothing failed (the exit status is 0 only then).
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.status != Status::Fail)
    }

    /// One line per finding: `STATUS item: detail (fix: …)`.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let _ = write!(out, "{:<4} {:<18} {}", f.status.as_str(), f.item, f.detail);
            if let Some(fix) = &f.fix {
                let _ = write!(out, " -> fix: {fix}");
            }
            out.push('\n');
        }
        out
    }

    /// The report as JSON for scripts.
    pub fn json(&self) -> Value {
        json!({
            "passed": self.passed(),
            "findings": self.findings.iter().map(|f| json!({
                "item": f.item,
                "status": f.status.as_str(),
                "detail": f.detail,
                "fix": f.fix,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_passes_only_without_a_fail_and_prints_one_line_each() {
        let mut report = Report::default();
        report.findings.push(Finding::ok("tpm", "fine"));
        report
            .findings
            .push(Finding::warn("ima_log", "missing", "enable IMA"));
        assert!(report.passed());
        report
            .findings
            .push(Finding::fail("registrar", "down", "start it"));
        assert!(!report.passed());
        let text = report.text();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text
            .lines()
            .nth(2)
            .is_some_and(|l| l.starts_with("FAIL registrar")
                && l.contains("down")
                && l.contains("fix: start it")));
        assert_eq!(report.json()["passed"], false);
        assert_eq!(report.json()["findings"][1]["status"], "WARN");
    }
}
