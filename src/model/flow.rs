//! A flow's status (seed 000's task status) and the modes it runs in.

use serde::{Deserialize, Serialize};

use super::Refusal;

/// 'Send All' captures every source record; 'Send Changed' only those whose
/// cursor is past the flow's checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "lowercase")]
pub enum RunMode {
    All,
    Changed,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<RunMode> {
        s.parse().ok()
    }

    /// The button's name in seed 000.
    pub fn label(self) -> &'static str {
        match self {
            RunMode::All => "Send All",
            RunMode::Changed => "Send Changed",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "lowercase")]
pub enum RunResult {
    Success,
    Failed,
    /// Cut off by a stop of its site (or of its integration).
    Halted,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<RunResult> {
        s.parse().ok()
    }
}

/// The status column of a flow: blank, `Pending All`, `Pending Changed`,
/// `Running`, or the result of the last run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowStatus {
    Blank,
    /// A run was requested while the site was stopped; it will not run
    /// (seed 000), and the next site start clears it.
    Pending(RunMode),
    Running(RunMode),
    Done(RunResult),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEvent {
    /// A run was asked for, by a person or by the schedule.
    Requested {
        mode: RunMode,
        site_running: bool,
    },
    Finished(RunResult),
    /// The site started: every status is reset to blank.
    SiteStarted,
}

impl FlowStatus {
    /// The text shown to operators.
    pub fn label(self) -> &'static str {
        match self {
            FlowStatus::Blank => "",
            FlowStatus::Pending(RunMode::All) => "Pending All",
            FlowStatus::Pending(RunMode::Changed) => "Pending Changed",
            FlowStatus::Running(_) => "Running",
            FlowStatus::Done(RunResult::Success) => "Success",
            FlowStatus::Done(RunResult::Failed) => "Failed",
            FlowStatus::Done(RunResult::Halted) => "Halted",
        }
    }

    /// The stored form: the label, except that a running status keeps its mode.
    pub fn encode(self) -> String {
        match self {
            FlowStatus::Running(mode) => format!("Running {}", mode.as_str()),
            other => other.label().to_string(),
        }
    }

    pub fn decode(s: &str) -> Option<FlowStatus> {
        Some(match s {
            "" => FlowStatus::Blank,
            "Pending All" => FlowStatus::Pending(RunMode::All),
            "Pending Changed" => FlowStatus::Pending(RunMode::Changed),
            "Running all" => FlowStatus::Running(RunMode::All),
            "Running changed" | "Running" => FlowStatus::Running(RunMode::Changed),
            "Success" => FlowStatus::Done(RunResult::Success),
            "Failed" => FlowStatus::Done(RunResult::Failed),
            "Halted" => FlowStatus::Done(RunResult::Halted),
            _ => return None,
        })
    }

    /// The request a site start discards with this status: one made while
    /// the site was stopped, which is not commenced (seed 000). A status
    /// left Running by a crash is blanked too, but it is no request.
    pub fn discarded_by_start(self) -> Option<RunMode> {
        match self {
            FlowStatus::Pending(mode) => Some(mode),
            _ => None,
        }
    }

    pub fn apply(self, event: FlowEvent) -> Result<FlowStatus, Refusal> {
        use FlowEvent as E;
        use FlowStatus as S;
        match (self, event) {
            (S::Running(_), E::Requested { .. }) => Err(Refusal::Conflict(
                "the flow is Running; wait for the run to finish".into(),
            )),
            (
                _,
                E::Requested {
                    mode,
                    site_running: false,
                },
            ) => Ok(S::Pending(mode)),
            (
                _,
                E::Requested {
                    mode,
                    site_running: true,
                },
            ) => Ok(S::Running(mode)),
            (S::Running(_), E::Finished(result)) => Ok(S::Done(result)),
            (state, E::Finished(_)) => Err(Refusal::Conflict(format!(
                "the flow is '{}', not Running",
                state.label()
            ))),
            (_, E::SiteStarted) => Ok(S::Blank),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FlowStatus as S;

    fn all_states() -> Vec<FlowStatus> {
        let mut v = vec![S::Blank];
        for m in [RunMode::All, RunMode::Changed] {
            v.push(S::Pending(m));
            v.push(S::Running(m));
        }
        for r in [RunResult::Success, RunResult::Failed, RunResult::Halted] {
            v.push(S::Done(r));
        }
        v
    }

    #[test]
    fn a_request_while_stopped_is_pending_and_does_not_run() {
        for state in all_states() {
            for mode in [RunMode::All, RunMode::Changed] {
                let got = state.apply(FlowEvent::Requested {
                    mode,
                    site_running: false,
                });
                match state {
                    S::Running(_) => assert!(got.is_err()),
                    _ => assert_eq!(got, Ok(S::Pending(mode))),
                }
            }
        }
        assert_eq!(S::Pending(RunMode::Changed).label(), "Pending Changed");
        assert_eq!(S::Pending(RunMode::All).label(), "Pending All");
    }

    #[test]
    fn a_request_while_running_starts_a_run_unless_one_runs() {
        for state in all_states() {
            let got = state.apply(FlowEvent::Requested {
                mode: RunMode::All,
                site_running: true,
            });
            match state {
                S::Running(_) => {
                    assert!(matches!(got, Err(Refusal::Conflict(m)) if m.contains("Running")))
                }
                _ => assert_eq!(got, Ok(S::Running(RunMode::All))),
            }
        }
    }

    #[test]
    fn only_a_running_flow_finishes() {
        for state in all_states() {
            let got = state.apply(FlowEvent::Finished(RunResult::Halted));
            match state {
                S::Running(_) => assert_eq!(got, Ok(S::Done(RunResult::Halted))),
                _ => assert!(got.is_err()),
            }
        }
    }

    #[test]
    fn a_site_start_blanks_every_status() {
        for state in all_states() {
            assert_eq!(state.apply(FlowEvent::SiteStarted), Ok(S::Blank));
        }
    }

    #[test]
    fn a_site_start_discards_only_pending_requests() {
        for state in all_states() {
            let want = match state {
                S::Pending(mode) => Some(mode),
                _ => None,
            };
            assert_eq!(state.discarded_by_start(), want, "{state:?}");
        }
    }

    #[test]
    fn stored_form_round_trips() {
        for state in all_states() {
            assert_eq!(FlowStatus::decode(&state.encode()), Some(state));
        }
    }
}
