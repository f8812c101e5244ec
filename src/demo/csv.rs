//! The demo workers' real work, as pure functions on CSV text (no quoting: the sample has none).

use std::collections::BTreeMap;

fn rows(text: &str, delimiter: char) -> Vec<Vec<&str>> {
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.split(delimiter).map(str::trim).collect())
        .collect()
}

fn join(rows: &[Vec<&str>]) -> String {
    let mut out = String::new();
    for row in rows {
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// Stage 01: reads `delimiter`-separated text, checks that every row has the header's width,
/// and writes comma-separated rows with `\n` line ends.
pub fn normalize(text: &str, delimiter: char) -> Result<String, String> {
    let rows = rows(text, delimiter);
    let Some(header) = rows.first() else {
        return Err("the file is empty".into());
    };
    for (i, row) in rows.iter().enumerate() {
        if row.len() != header.len() {
            return Err(format!(
                "row {} has {} columns, the header has {}",
                i + 1,
                row.len(),
                header.len()
            ));
        }
    }
    Ok(join(&rows))
}

/// Stage 02: drops the 1-based column `column_num`.
pub fn drop_column(text: &str, column_num: usize) -> Result<String, String> {
    let mut rows = rows(text, ',');
    let width = rows.first().map_or(0, Vec::len);
    if column_num == 0 || column_num > width {
        return Err(format!(
            "column {column_num} does not exist (the file has {width})"
        ));
    }
    for row in &mut rows {
        row.remove(column_num - 1);
    }
    Ok(join(&rows))
}

/// Stage 03: one table per distinct value of the column named `column`, sorted by that value.
pub fn split_by(text: &str, column: &str) -> Result<Vec<(String, String)>, String> {
    let rows = rows(text, ',');
    let Some((header, body)) = rows.split_first() else {
        return Err("the file is empty".into());
    };
    let index = header
        .iter()
        .position(|name| *name == column)
        .ok_or_else(|| format!("no column named '{column}'"))?;
    let mut groups: BTreeMap<&str, Vec<Vec<&str>>> = BTreeMap::new();
    for row in body {
        groups.entry(row[index]).or_default().push(row.clone());
    }
    Ok(groups
        .into_iter()
        .map(|(key, mut rows)| {
            rows.insert(0, header.clone());
            (key.to_owned(), join(&rows))
        })
        .collect())
}

/// Stage 04: the number of readings and the sum of the last column.
pub fn summarize(text: &str) -> Result<(usize, f64), String> {
    let rows = rows(text, ',');
    let mut total = 0.0;
    for row in rows.iter().skip(1) {
        let cell = row.last().copied().unwrap_or("");
        total += cell
            .parse::<f64>()
            .map_err(|_| format!("'{cell}' is not a number"))?;
    }
    Ok((rows.len().saturating_sub(1), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("energy.csv");

    #[test]
    fn normalize_fixes_line_ends_and_checks_width() {
        let out = normalize("a;b\r\n1;2\r\n", ';').expect("valid");
        assert_eq!(out, "a,b\n1,2\n");
        assert!(normalize("a,b\n1\n", ',').is_err());
        assert!(normalize("", ',').is_err());
    }

    #[test]
    fn drop_column_removes_the_index() {
        assert_eq!(drop_column("i,x\n0,a\n", 1).expect("valid"), "x\na\n");
        assert!(drop_column("i,x\n", 3).is_err());
    }

    #[test]
    fn the_sample_splits_into_fourteen_sensor_tables() {
        let text = drop_column(&normalize(SAMPLE, ',').expect("valid"), 1).expect("valid");
        let tables = split_by(&text, "sensor").expect("valid");
        assert_eq!(tables.len(), 14);
        assert_eq!(tables[0].0, "ec-generator");
        let (readings, total) = summarize(&tables[0].1).expect("valid");
        assert_eq!(readings, 8);
        assert!(total > 0.0);
    }
}
