//! The Prometheus text exposition format, version 0.0.4.

use std::fmt::Write;

use super::series::Snapshot;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A scrape's text, written family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts family `name`: its samples follow.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// The `_bucket`, `_sum` and `_count` samples of a histogram family.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], s: &Snapshot) {
        for (bound, count) in &s.cumulative {
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&number(*bound)));
            let _ = writeln!(self.out, " {count}");
        }
        let _ = write!(self.out, "{name}_bucket");
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.out, " {}", s.count);
        self.sample(&format!("{name}_sum"), labels, s.sum);
        self.sample(&format!("{name}_count"), labels, s.count as f64);
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        for (i, (name, value)) in all.enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{name}=\"{}\"", escape(value, true));
        }
        self.out.push('}');
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

/// Backslash and newline in help text; also double quotes in label values.
fn escape(text: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::series::Histogram;

    #[test]
    fn families_samples_and_histograms_are_written_as_the_format_says() {
        let mut e = Exposition::default();
        e.family("x_total", "Things.\nCounted \\ here", Kind::Counter);
        e.sample(
            "x_total",
            &[("route", "GET /a/{id}"), ("q", "say \"hi\"")],
            3.0,
        );
        let h = Histogram::new([1000], 1e6);
        h.observe(5);
        e.family("d_seconds", "Durations", Kind::Histogram);
        e.histogram("d_seconds", &[], &h.snapshot());
        assert_eq!(
            e.finish(),
            "# HELP x_total Things.\\nCounted \\\\ here\n# TYPE x_total counter\n\
             x_total{route=\"GET /a/{id}\",q=\"say \\\"hi\\\"\"} 3\n\
             # HELP d_seconds Durations\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{le=\"0.001\"} 1\nd_seconds_bucket{le=\"+Inf\"} 1\n\
             d_seconds_sum 0.000005\nd_seconds_count 1\n"
        );
    }
}
