//! Code blocks of the user documentation, for tests that run what the
//! docs show.

/// The fenced code blocks of `markdown` in order, each with its info
/// string (`yaml`, `sh`, ...) and its text dedented as a whole (snippets
/// indented inside a list item keep their own structure).
#[must_use]
pub fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut fence: Option<String> = None;
    let mut current = String::new();
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        match fence.take() {
            Some(info) if trimmed.starts_with("```") => {
                blocks.push((info, dedent(&std::mem::take(&mut current))));
            }
            Some(info) => {
                current.push_str(line);
                current.push('\n');
                fence = Some(info);
            }
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    fence = Some(info.trim().to_owned());
                }
            }
        }
    }
    blocks
}

/// The fenced code blocks of `markdown` whose info string is `lang`, as
/// [`code_blocks`] has them.
#[must_use]
pub fn fenced_blocks(markdown: &str, lang: &str) -> Vec<String> {
    code_blocks(markdown)
        .into_iter()
        .filter(|(info, _)| info == lang)
        .map(|(_, text)| text)
        .collect()
}

/// The ```yaml block of `markdown` whose first line is `first_line` (a
/// comment naming the file, say).
///
/// # Errors
/// None or more than one such block.
pub fn yaml_block(markdown: &str, first_line: &str) -> anyhow::Result<String> {
    let mut found: Vec<String> = fenced_blocks(markdown, "yaml")
        .into_iter()
        .filter(|b| b.lines().next().map(str::trim) == Some(first_line))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        n => anyhow::bail!("{n} ```yaml blocks start with {first_line:?}, expected one"),
    }
}

fn dedent(block: &str) -> String {
    let indent = block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    block
        .lines()
        .map(|l| format!("{}\n", l.get(indent..).unwrap_or("")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_indented_blocks_by_language_and_first_line() {
        let md = "```yaml\n# a.yml\nx: 1\n```\n\n1. item\n\n   ```yaml\n   # b.yml\n   y:\n     z: 2\n   ```\n```sh\necho\n```\n";
        assert_eq!(
            fenced_blocks(md, "yaml"),
            vec!["# a.yml\nx: 1\n", "# b.yml\ny:\n  z: 2\n"]
        );
        assert_eq!(fenced_blocks(md, "sh"), vec!["echo\n"]);
        assert_eq!(
            yaml_block(md, "# b.yml").ok().as_deref(),
            Some("# b.yml\ny:\n  z: 2\n")
        );
        assert!(yaml_block(md, "# c.yml").is_err());
    }
}
