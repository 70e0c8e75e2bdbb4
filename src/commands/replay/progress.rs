//! What a replay shows while it runs: a progress bar on a terminal, a line per 10 000
//! messages elsewhere, and the reader's notes (the format chosen, lines split on).

use std::io::{self, IsTerminal};

const PROGRESS_EVERY: u64 = 10_000;

/// A progress bar on a terminal, a line per 10 000 messages elsewhere.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: u64,
}

impl Progress {
    pub fn new(total_bytes: u64) -> Progress {
        let bar = io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total_bytes);
            let style = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("a valid template");
            bar.set_style(style);
            bar
        });
        Progress { bar, last_line: 0 }
    }

    pub fn tick(&mut self, messages: u64, bytes: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(bytes);
                bar.set_message(format!("{messages} messages"));
            }
            None if messages >= self.last_line + PROGRESS_EVERY => {
                self.last_line = messages - messages % PROGRESS_EVERY;
                eprintln!("replay: {messages} messages, {bytes} bytes");
            }
            None => {}
        }
    }

    /// A line for the operator; it may name a file, so it is escaped as every line is.
    pub fn note(&self, text: &str) {
        let text = crate::log::escape(text);
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
