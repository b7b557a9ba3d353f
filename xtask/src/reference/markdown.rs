//! Small helpers for writing Markdown tables.

/// `text` made safe for one table cell: whitespace (newlines included)
/// collapsed to single spaces and `|` escaped.
pub fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// `text` as inline code, for a table cell.
pub fn code(text: &str) -> String {
    format!("`{}`", cell(text))
}

/// A Markdown table with `headers` and `rows`, ending with a blank line.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", headers.join(" | "));
    out.push_str(&format!(
        "|{}\n",
        headers.iter().map(|_| " --- |").collect::<String>()
    ));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_stay_on_one_line_and_pipes_do_not_split_them() {
        assert_eq!(cell("a\n  b | c\n\nd"), "a b \\| c d");
        assert_eq!(code("x|y"), "`x\\|y`");
        assert_eq!(
            table(&["a", "b"], &[vec!["1".into(), "2".into()]]),
            "| a | b |\n| --- | --- |\n| 1 | 2 |\n\n"
        );
    }
}
