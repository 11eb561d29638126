//! The --summary table: one line per connection, columns padded to their widest cell.

use super::visible;
use crate::path::summary::Summary;

const HEADERS: [&str; 6] = ["conn", "client", "server", "service", "path", "packets"];

pub fn table(summary: &Summary) -> String {
    let rows: Vec<[String; 6]> = summary
        .rows()
        .map(|r| {
            [
                r.connection.to_string(),
                visible(&r.client).into_owned(),
                visible(&r.server).into_owned(),
                r.service.clone(),
                if r.path.is_empty() {
                    "(not explained yet)".into()
                } else {
                    visible(&r.path).into_owned()
                },
                format!("{} -> / {} <-", r.requests, r.replies),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = format!("connections seen:\n{}\n", line(HEADERS));
    for row in &rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
        out.push('\n');
    }
    out
}
