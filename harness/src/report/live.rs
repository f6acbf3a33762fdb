//! The live progress line of `harness run` on a terminal: done/total, the failures so far and
//! the scenarios running now, redrawn in place (indicatif) with each finished scenario's plain
//! line printed above it. Off a terminal nothing here is used: the plain lines are printed as
//! they always were.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{ScenarioResult, Status};

/// The line at the bottom of the terminal while a run goes on.
pub struct LiveLine {
    bar: ProgressBar,
    /// Names of the scenarios running now, in the order they started.
    running: Vec<String>,
    failed: usize,
}

impl LiveLine {
    /// A line for `total` scenarios, drawn on stdout or stderr (whichever carries the run's
    /// plain lines; the caller has checked that it is a terminal).
    pub fn new(total: usize, on_stdout: bool) -> LiveLine {
        let target = if on_stdout {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(total as u64), target);
        bar.set_style(
            ProgressStyle::with_template("[{bar:30}] {pos}/{len} {elapsed:>3} {wide_msg}")
                .expect("a valid template")
                .progress_chars("##."),
        );
        let line = LiveLine {
            bar,
            running: Vec::new(),
            failed: 0,
        };
        line.bar.set_message(line.message());
        // Redraws the elapsed time while a long scenario runs.
        line.bar.enable_steady_tick(Duration::from_millis(250));
        line
    }

    /// A scenario got a job slot.
    pub fn started(&mut self, name: &str) {
        self.running.push(name.to_string());
        self.bar.set_message(self.message());
    }

    /// A scenario ended: `plain` (its progress line) goes above the live line.
    pub fn finished(&mut self, plain: &str, r: &ScenarioResult) {
        if let Some(i) = self.running.iter().position(|n| *n == r.name) {
            self.running.remove(i);
        }
        if r.status == Status::Failed {
            self.failed += 1;
        }
        // The line is redrawn with the new state under the printed one.
        self.bar.set_message(self.message());
        self.bar.inc(1);
        self.bar.println(plain);
    }

    /// Removes the line from the terminal (the summary follows).
    pub fn clear(self) {
        self.bar.finish_and_clear();
    }

    fn message(&self) -> String {
        status_message(self.failed, &self.running)
    }
}

/// What follows the counter: the failures so far and the running scenarios.
pub fn status_message(failed: usize, running: &[String]) -> String {
    let mut m = format!("{failed} failed");
    if !running.is_empty() {
        m.push_str(" | running: ");
        m.push_str(&running.join(", "));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_failures_and_running_scenarios() {
        assert_eq!(status_message(0, &[]), "0 failed");
        assert_eq!(
            status_message(2, &["exec/tty".into(), "lifecycle/sigterm".into()]),
            "2 failed | running: exec/tty, lifecycle/sigterm"
        );
    }
}
