//! The Rust in the module author's guides is real code: every ```rust block
//! of `docs/writing-a-module.md`, `docs/layouts.md` and `docs/sessions.md`
//! names, on the line before it, the file it was taken from
//! (`<!-- from: PATH -->`), and is found there line for line. The files are modules that are built and
//! tested (or doc tests that compile), so an example in the guide cannot
//! drift from code that works.
//!
//! A block may also be taken from a doc comment (`/// ` or `//! ` lines); it
//! is then compared with what rustdoc shows, without the hidden `# ` lines.

use std::path::Path;

const GUIDES: [&str; 3] = ["docs/writing-a-module.md", "docs/layouts.md", "docs/sessions.md"];
const MARK: &str = "<!-- from: ";

/// A fenced Rust block of a guide and the file it says it comes from.
#[derive(Debug)]
struct Block {
    guide: &'static str,
    line: usize,
    from: Option<String>,
    code: Vec<String>,
}

fn rust_blocks(guide: &'static str, text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    let mut last_text_line = "";
    while let Some((at, line)) = lines.next() {
        if line.trim() == "```rust" {
            let from = last_text_line
                .trim()
                .strip_prefix(MARK)
                .and_then(|rest| rest.strip_suffix("-->"))
                .map(|path| path.trim().to_owned());
            let code = lines.by_ref().map(|(_, line)| line).take_while(|line| line.trim() != "```");
            blocks.push(Block { guide, line: at + 1, from, code: code.map(str::to_owned).collect() });
            last_text_line = "";
        } else if !line.trim().is_empty() {
            last_text_line = line;
        }
    }
    blocks
}

/// The file's lines as the reader of each kind of source sees them: as
/// written, and the text of its doc comments (`prefix` stripped, rustdoc's
/// hidden lines left out; other lines break a match).
fn views(source: &str) -> Vec<Vec<Option<String>>> {
    let mut prefixes: Vec<String> = Vec::new();
    for line in source.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        for marker in ["/// ", "//! "] {
            if line.trim_start().starts_with(marker) {
                let prefix = format!("{indent}{marker}");
                if !prefixes.contains(&prefix) {
                    prefixes.push(prefix);
                }
            }
        }
    }
    let mut views = vec![source.lines().map(|line| Some(line.to_owned())).collect()];
    for prefix in prefixes {
        let bare = prefix.trim_end();
        let view = source
            .lines()
            .filter_map(|line| {
                let shown = match line.strip_prefix(prefix.as_str()) {
                    Some(rest) => rest,
                    None if line == bare => "",
                    None => return Some(None),
                };
                let hidden = shown == "#" || shown.starts_with("# ");
                (!hidden).then(|| Some(shown.to_owned()))
            })
            .collect();
        views.push(view);
    }
    views
}

fn contains(view: &[Option<String>], code: &[String]) -> bool {
    view.windows(code.len())
        .any(|window| window.iter().zip(code).all(|(line, want)| line.as_deref() == Some(want.as_str())))
}

#[test]
fn every_rust_block_in_the_module_guides_is_code_from_the_file_it_names() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for guide in GUIDES {
        let text = std::fs::read_to_string(workspace.join(guide))
            .unwrap_or_else(|error| panic!("cannot read {guide}: {error}"));
        for block in rust_blocks(guide, &text) {
            let Some(from) = &block.from else {
                wrong.push(format!(
                    "{}:{}: no `{MARK}PATH -->` line before the block",
                    block.guide, block.line
                ));
                continue;
            };
            let source = match std::fs::read_to_string(workspace.join(from)) {
                Ok(source) => source,
                Err(error) => {
                    wrong.push(format!("{}:{}: cannot read {from}: {error}", block.guide, block.line));
                    continue;
                }
            };
            if block.code.is_empty() || !views(&source).iter().any(|view| contains(view, &block.code)) {
                wrong.push(format!(
                    "{}:{}: the block is not in {from} as written (first line: {:?})",
                    block.guide,
                    block.line,
                    block.code.first()
                ));
                continue;
            }
            checked += 1;
        }
    }
    assert!(wrong.is_empty(), "code in the guides that is not the code it names:\n{}", wrong.join("\n"));
    assert!(checked >= 8, "only {checked} blocks were checked: the guides lost their examples?");
}
