//! The CSV output of `dcgka bench`: one row per (operation, size). Scripts and tests read
//! these columns; keep them exactly as they are.

use std::path::Path;

use super::measure::Row;

/// The CSV header (issue 4).
const CSV_HEADER: &str = "op,n,iterations,traffic_bytes,sender_cpu_ms_median,sender_cpu_ms_sd,\
recipient_cpu_ms_median,recipient_cpu_ms_sd,newcomer_cpu_ms_median";

/// The columns `--store` adds (issue 11).
const STORE_COLUMNS: &str = ",store_write_bytes_median,store_commit_ms_median";

impl Row {
    fn csv(&self, store: bool) -> String {
        let mut line = format!(
            "{},{},{},{},{:.3},{:.3},{:.3},{:.3},{}",
            self.op,
            self.n,
            self.iterations,
            self.traffic,
            self.sender_median,
            self.sender_sd,
            self.recipient_median,
            self.recipient_sd,
            self.newcomer_median.map(|x| format!("{x:.3}")).unwrap_or_default()
        );
        if store {
            match &self.store {
                Some(s) => line.push_str(&format!(",{:.0},{:.3}", s.write_bytes_median, s.commit_ms_median)),
                None => line.push_str(",,"),
            }
        }
        line
    }
}

/// Writes `rows` as CSV to `path` ("-": standard output).
pub(super) fn write_csv(path: &Path, rows: &[Row]) -> Result<(), String> {
    let store = rows.iter().any(|r| r.store.is_some());
    let mut text = format!("{CSV_HEADER}{}\n", if store { STORE_COLUMNS } else { "" });
    for r in rows {
        text.push_str(&r.csv(store));
        text.push('\n');
    }
    if path == Path::new("-") {
        print!("{text}");
        return Ok(());
    }
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}
