//! `EXPLAIN` for people: each statement's per-batch plans and its window operator.

use super::*;

impl SqlProgram {
    /// The streaming plan, for `rivulet explain`.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        let lateness = fmt_millis(
            i64::try_from(self.settings.allowed_lateness.as_millis()).unwrap_or(i64::MAX),
        );
        let idle =
            fmt_millis(i64::try_from(self.settings.idle_timeout.as_millis()).unwrap_or(i64::MAX));
        for (i, stmt) in self.statements.iter().enumerate() {
            s.push_str(&format!("statement {} → stream {}\n", i + 1, stmt.output));
            s.push_str(&format!("  sql: {}\n", stmt.sql));
            match &stmt.stage {
                Stage::Stateless(p) => {
                    s.push_str("  per batch (stateless):\n");
                    push_indented(&mut s, &p.display(), 4);
                }
                Stage::Windowed(w) => {
                    s.push_str("  per batch, before the window:\n");
                    push_indented(&mut s, &w.pre.display(), 4);
                    s.push_str(&format!("  {}\n", w.op.describe()));
                    s.push_str(&format!(
                        "    watermark: largest event time per partition − {lateness} allowed \
                         lateness, minimum over partitions active in the last {idle}; a window \
                         is emitted when the watermark passes its end; later rows go to the \
                         error output as `late`\n"
                    ));
                    s.push_str("  per batch, on emitted windows:\n");
                    push_indented(&mut s, &w.post.display(), 4);
                }
            }
        }
        s
    }
}

pub(super) fn push_indented(out: &mut String, text: &str, n: usize) {
    for line in text.lines() {
        out.push_str(&" ".repeat(n));
        out.push_str(line);
        out.push('\n');
    }
}
