//! Reading result documents: one per file, or several concatenated on stdin (`kubectl logs
//! -l job-name=… | sockstorm merge -`), where lines that are not JSON (a log's other lines)
//! are skipped and counted.

use super::error::ResultsError;
use serde_json::Value;

/// A result document and the name errors and tables call it by.
#[derive(Debug, Clone)]
pub struct Input {
    /// Its file, or `-#k` for the k-th document on stdin.
    pub name: String,
    /// The document.
    pub doc: Value,
}

/// The documents in `text`, read from `source` (a path, or `-`): JSON objects at the start
/// of a line, each named `source` (a file) or `-#k`; returns them and the number of other
/// lines skipped. A file must hold exactly one document.
pub fn documents(source: &str, text: &str) -> Result<(Vec<Input>, usize), ResultsError> {
    let stdin = source == "-";
    let (mut out, mut skipped, mut at) = (Vec::new(), 0, 0);
    while at < text.len() {
        let rest = &text[at..];
        let trimmed = rest.trim_start();
        if trimmed.is_empty() {
            break;
        }
        let start = at + (rest.len() - trimmed.len());
        if !trimmed.starts_with('{') {
            if !stdin {
                return Err(not_a_document(source, "it does not begin with `{`"));
            }
            skipped += 1;
            at = text[start..]
                .find('\n')
                .map_or(text.len(), |i| start + i + 1);
            continue;
        }
        let name = if stdin {
            format!("-#{}", out.len() + 1)
        } else {
            source.to_owned()
        };
        let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        let doc = match stream.next() {
            Some(Ok(doc)) => doc,
            Some(Err(e)) => return Err(not_a_document(&name, &e.to_string())),
            None => break,
        };
        at = start + stream.byte_offset();
        if doc.get("schema_version").is_none() {
            return Err(not_a_document(&name, "JSON without `schema_version`"));
        }
        out.push(Input { name, doc });
        if !stdin && !text[at..].trim().is_empty() {
            return Err(not_a_document(
                source,
                "more after the document (one per file; use `-` for several)",
            ));
        }
    }
    Ok((out, skipped))
}

fn not_a_document(file: &str, reason: &str) -> ResultsError {
    ResultsError::NotADocument {
        file: file.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_holds_several_documents_between_log_lines() {
        let text = "starting\n{\"schema_version\":2,\"a\":1}\n{\"schema_version\":2}\nsummary line\n  {\"schema_version\":2,\n\"b\":[1]}\n";
        let (docs, skipped) = documents("-", text).unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(skipped, 2);
        assert_eq!(docs[2].name, "-#3");
        assert_eq!(docs[2].doc["b"][0], 1);
    }

    #[test]
    fn a_file_is_one_whole_document() {
        assert_eq!(
            documents("a.json", "{\"schema_version\":2}")
                .unwrap()
                .0
                .len(),
            1
        );
        let e = documents("a.json", "{\"schema_version\":2")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("`a.json`: not a sockstorm result document: EOF"),
            "{e}"
        );
        let e = documents("a.json", "{\"x\":1}").unwrap_err().to_string();
        assert!(e.contains("without `schema_version`"), "{e}");
        let e = documents("a.json", "{\"schema_version\":2}{\"schema_version\":2}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("one per file"), "{e}");
    }
}
