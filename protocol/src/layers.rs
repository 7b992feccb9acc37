//! Needs as AllexJS layers them: the operator's `needs`, extended by
//! `needs.overlay`, plus what was changed while running in `needs.runtime`.
//!
//! Pure: texts in, merged needs and the runtime layer's new text out. The
//! lan manager never rewrites `needs` or `needs.overlay`; every change an
//! operator makes through the CLI or the API is an edit of the runtime layer.

use crate::error::FileError;
use crate::located::{error_at, find_key, parse_array};
use crate::names::InstanceName;
use crate::need::{Need, NeedError, NeedsFile};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// One entry of `needs.runtime`.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeEntry {
    /// A need added while running; replaces a lower need of its name.
    Need(Need),
    /// `{"instancename": NAME, "removed": true}`: a need of `needs` removed.
    Removed(InstanceName),
    /// `{"instancename": NAME, ...}` without a `modulename`: fields laid over
    /// a need of `needs` (today only `closed`, from `need disable`/`enable`).
    Patch(InstanceName, Map<String, Value>),
}

impl RuntimeEntry {
    /// The instance the entry is about.
    pub fn instance(&self) -> &InstanceName {
        match self {
            RuntimeEntry::Need(n) => &n.instancename,
            RuntimeEntry::Removed(i) | RuntimeEntry::Patch(i, _) => i,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            RuntimeEntry::Need(n) => serde_json::to_value(n).unwrap_or(Value::Null),
            RuntimeEntry::Removed(i) => {
                let mut m = Map::new();
                m.insert("instancename".into(), Value::String(i.to_string()));
                m.insert("removed".into(), Value::Bool(true));
                Value::Object(m)
            }
            RuntimeEntry::Patch(i, fields) => {
                let mut m = Map::new();
                m.insert("instancename".into(), Value::String(i.to_string()));
                m.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                Value::Object(m)
            }
        }
    }
}

/// Which files a merged need comes from, as `need list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin {
    /// Defined in `needs` (otherwise added at runtime).
    pub from_needs: bool,
    /// Extended by an entry of `needs.overlay`.
    pub overlaid: bool,
    /// Defined or changed by `needs.runtime`.
    pub runtime: bool,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.from_needs {
            parts.push("needs");
        }
        if self.overlaid {
            parts.push("overlay");
        }
        if self.runtime {
            parts.push("runtime");
        }
        f.write_str(&parts.join("+"))
    }
}

/// A merged need and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Layered {
    /// The need as merged.
    pub need: Need,
    /// The files it comes from.
    pub origin: Origin,
}

/// The three layers, each checked; [`Layers::effective`] merges them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layers {
    /// `needs`, the operator's file.
    pub base: Vec<Need>,
    /// `needs.overlay`: top-level fields laid over the need of each `instancename`.
    pub overlay: Vec<(InstanceName, Map<String, Value>)>,
    /// `needs.runtime`, in file order.
    pub runtime: Vec<RuntimeEntry>,
}

/// A file's path and text, for parsing with located errors.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Names the file in errors.
    pub path: &'a Path,
    /// Its content.
    pub text: &'a str,
}

impl Layers {
    /// Parses and checks the three files (an absent layer is `None`); the
    /// first fault is reported with its file, line and column, and a layer
    /// whose merge makes a need invalid is reported at its entry.
    pub fn parse(
        needs: Source<'_>,
        overlay: Option<Source<'_>>,
        runtime: Option<Source<'_>>,
    ) -> Result<Layers, FileError> {
        let base = NeedsFile::parse(needs.path, needs.text)?.0;
        let mut layers = Layers {
            base,
            ..Layers::default()
        };
        if let Some(src) = overlay {
            for (offset, entry) in parse_array::<Map<String, Value>>(src.path, src.text)? {
                let name = entry_name(src, offset, &entry)?;
                let mut trial = layers.clone();
                trial.overlay.push((name, entry));
                check_merge(&trial, src, offset)?;
                layers = trial;
            }
        }
        if let Some(src) = runtime {
            for (offset, entry) in parse_array::<Map<String, Value>>(src.path, src.text)? {
                let name = entry_name(src, offset, &entry)?;
                let parsed = if entry.contains_key("modulename") {
                    let need: Need = serde_json::from_value(Value::Object(entry))
                        .map_err(|e| error_at(src.path, src.text, offset, e.to_string()))?;
                    need.validate().map_err(|e| {
                        let key = match &e {
                            NeedError::BadField { field, .. } => field,
                            NeedError::BadAddress(_) => "ipaddress",
                            NeedError::BadProtocols => "protocols",
                            NeedError::Name(_) => "modulename",
                        };
                        error_at(
                            src.path,
                            src.text,
                            find_key(src.text, offset, key),
                            e.to_string(),
                        )
                    })?;
                    RuntimeEntry::Need(need)
                } else if entry.get("removed") == Some(&Value::Bool(true)) {
                    RuntimeEntry::Removed(name)
                } else {
                    let mut fields = entry;
                    fields.shift_remove("instancename");
                    RuntimeEntry::Patch(name, fields)
                };
                let mut trial = layers.clone();
                trial.runtime.push(parsed);
                check_merge(&trial, src, offset)?;
                layers = trial;
            }
        }
        Ok(layers)
    }

    /// The needs in effect: `needs` in file order, each extended by its
    /// overlay entries, then the runtime layer's entries applied in order.
    ///
    /// Merges that would make a need invalid are skipped: [`Layers::parse`]
    /// refuses them, and the edits below only produce valid ones.
    pub fn effective(&self) -> Vec<Layered> {
        self.merge().0
    }

    fn merge(&self) -> (Vec<Layered>, Option<NeedError>) {
        let mut fault = None;
        let mut out: Vec<Layered> = self
            .base
            .iter()
            .map(|n| Layered {
                need: n.clone(),
                origin: Origin {
                    from_needs: true,
                    ..Origin::default()
                },
            })
            .collect();
        let mut at: HashMap<InstanceName, usize> = out
            .iter()
            .enumerate()
            .map(|(i, l)| (l.need.instancename.clone(), i))
            .collect();
        for (name, fields) in &self.overlay {
            // An overlay entry with no need of its name is ignored, as in AllexJS.
            let Some(&i) = at.get(name) else { continue };
            match extend(&out[i].need, fields) {
                Ok(n) => {
                    out[i].need = n;
                    out[i].origin.overlaid = true;
                }
                Err(e) => fault = Some(e),
            }
        }
        let mut removed = vec![false; out.len()];
        for entry in &self.runtime {
            match entry {
                RuntimeEntry::Need(n) => {
                    let layered = Layered {
                        need: n.clone(),
                        origin: Origin {
                            runtime: true,
                            ..Origin::default()
                        },
                    };
                    match at.get(&n.instancename) {
                        Some(&i) => {
                            out[i] = layered;
                            removed[i] = false;
                        }
                        None => {
                            at.insert(n.instancename.clone(), out.len());
                            out.push(layered);
                            removed.push(false);
                        }
                    }
                }
                RuntimeEntry::Removed(name) => {
                    if let Some(&i) = at.get(name) {
                        removed[i] = true;
                    }
                }
                RuntimeEntry::Patch(name, fields) => {
                    let Some(&i) = at.get(name) else { continue };
                    if removed[i] {
                        continue;
                    }
                    match extend(&out[i].need, fields) {
                        Ok(n) => {
                            out[i].need = n;
                            out[i].origin.runtime = true;
                        }
                        Err(e) => fault = Some(e),
                    }
                }
            }
        }
        let out = out
            .into_iter()
            .zip(removed)
            .filter(|(_, r)| !r)
            .map(|(l, _)| l)
            .collect();
        (out, fault)
    }

    /// The runtime layer's file text: pretty JSON with a trailing newline.
    pub fn runtime_text(&self) -> String {
        let values: Vec<Value> = self.runtime.iter().map(RuntimeEntry::to_value).collect();
        let mut s = serde_json::to_string_pretty(&values).unwrap_or_else(|_| "[]".into());
        s.push('\n');
        s
    }

    /// The needs of `needs` and `needs.overlay` alone, before the runtime layer.
    fn lower(&self) -> Layers {
        Layers {
            runtime: Vec::new(),
            ..self.clone()
        }
    }

    /// Adds `need` (the caller checked that no need of its name is in effect).
    pub fn add(&mut self, need: Need) {
        self.runtime.retain(|e| e.instance() != &need.instancename);
        self.runtime.push(RuntimeEntry::Need(need));
    }

    /// Removes the need `name`; one from `needs` is recorded as removed.
    pub fn remove(&mut self, name: &InstanceName) {
        self.runtime.retain(|e| e.instance() != name);
        if self
            .lower()
            .effective()
            .iter()
            .any(|l| &l.need.instancename == name)
        {
            self.runtime.push(RuntimeEntry::Removed(name.clone()));
        }
    }

    /// Closes (`need disable`) or reopens (`need enable`) the need `name`.
    ///
    /// A need added at runtime has the field set in its own entry; one from
    /// `needs` gets a patch, dropped again once it no longer changes anything.
    pub fn set_closed(&mut self, name: &InstanceName, closed: bool) {
        for entry in &mut self.runtime {
            if let RuntimeEntry::Need(n) = entry {
                if &n.instancename == name {
                    if closed {
                        n.set_closed(true);
                    } else {
                        n.extra.shift_remove("closed");
                    }
                    return;
                }
            }
        }
        let lower_closed = self
            .lower()
            .effective()
            .iter()
            .any(|l| &l.need.instancename == name && l.need.closed());
        let patch = self.runtime.iter_mut().find_map(|e| match e {
            RuntimeEntry::Patch(i, fields) if i == name => Some(fields),
            _ => None,
        });
        let fields = match patch {
            Some(f) => f,
            None => {
                self.runtime
                    .push(RuntimeEntry::Patch(name.clone(), Map::new()));
                match self.runtime.last_mut() {
                    Some(RuntimeEntry::Patch(_, f)) => f,
                    _ => return,
                }
            }
        };
        if closed == lower_closed {
            fields.shift_remove("closed");
        } else {
            fields.insert("closed".into(), Value::Bool(closed));
        }
        self.runtime
            .retain(|e| !matches!(e, RuntimeEntry::Patch(_, f) if f.is_empty()));
    }
}

/// `need` with `fields` laid over it (top-level keys replace the need's).
fn extend(need: &Need, fields: &Map<String, Value>) -> Result<Need, NeedError> {
    let mut value = match serde_json::to_value(need) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (k, v) in fields {
        if k != "instancename" {
            value.insert(k.clone(), v.clone());
        }
    }
    let merged: Need =
        serde_json::from_value(Value::Object(value)).map_err(|e| NeedError::BadField {
            field: "entry",
            why: if e.to_string().contains("modulename") {
                "modulename must be a name"
            } else {
                "a field has the wrong type"
            },
        })?;
    merged.validate()?;
    Ok(merged)
}

fn entry_name(
    src: Source<'_>,
    offset: usize,
    entry: &Map<String, Value>,
) -> Result<InstanceName, FileError> {
    let at = find_key(src.text, offset, "instancename");
    let text = entry
        .get("instancename")
        .and_then(|v| v.as_str())
        .ok_or_else(|| error_at(src.path, src.text, offset, "missing instancename".into()))?;
    InstanceName::new(text).map_err(|e| error_at(src.path, src.text, at, e.to_string()))
}

/// Refuses a layer entry (at `offset` of `src`) whose merge breaks a need.
fn check_merge(trial: &Layers, src: Source<'_>, offset: usize) -> Result<(), FileError> {
    match trial.merge().1 {
        None => Ok(()),
        Some(e) => {
            let key = match &e {
                NeedError::BadField { field, .. } if *field != "entry" => field,
                NeedError::BadAddress(_) => "ipaddress",
                NeedError::BadProtocols => "protocols",
                _ => "instancename",
            };
            let at = find_key(src.text, offset, key);
            Err(error_at(src.path, src.text, at, e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance;

    fn src<'a>(path: &'a str, text: &'a str) -> Source<'a> {
        Source {
            path: Path::new(path),
            text,
        }
    }

    fn names(l: &Layers) -> Vec<String> {
        l.effective()
            .iter()
            .map(|l| format!("{}:{}", l.need.instancename, l.origin))
            .collect()
    }

    const BASE: &str = r#"[{"modulename":"m","instancename":"A","propertyhash":{}},
{"modulename":"m","instancename":"B","propertyhash":{"x":1}}]"#;

    #[test]
    fn overlay_extends_shallowly_and_ignores_strangers() {
        let ov = r#"[{"instancename":"B","propertyhash":{"y":2},"debug":true},{"instancename":"Z","closed":true}]"#;
        let l = Layers::parse(src("needs", BASE), Some(src("needs.overlay", ov)), None).unwrap();
        assert_eq!(names(&l), ["A:needs", "B:needs+overlay"]);
        let b = &l.effective()[1].need;
        assert_eq!(b.propertyhash.get("y"), Some(&Value::from(2)));
        assert_eq!(b.propertyhash.get("x"), None, "top-level keys replace");
        assert_eq!(b.extra.get("debug"), Some(&Value::Bool(true)));
    }

    #[test]
    fn runtime_adds_removes_and_closes_and_round_trips() {
        let mut l = Layers::parse(src("needs", BASE), None, None).unwrap();
        l.add(Need::new("m", instance!("C")));
        l.remove(&instance!("A"));
        l.set_closed(&instance!("B"), true);
        l.set_closed(&instance!("C"), true);
        assert_eq!(names(&l), ["B:needs+runtime", "C:runtime"]);
        assert!(l.effective().iter().all(|n| n.need.closed()));
        let text = l.runtime_text();
        assert!(text.contains("\"removed\": true"), "{text}");
        let again =
            Layers::parse(src("needs", BASE), None, Some(src("needs.runtime", &text))).unwrap();
        assert_eq!(again.effective(), l.effective());
        l.set_closed(&instance!("B"), false);
        l.set_closed(&instance!("C"), false);
        assert_eq!(names(&l), ["B:needs", "C:runtime"]);
        assert!(l.effective().iter().all(|n| !n.need.closed()));
        assert_eq!(
            l.runtime.len(),
            2,
            "the empty patch of B is dropped: {:?}",
            l.runtime
        );
        l.add(Need::new("m2", instance!("A")));
        assert_eq!(names(&l), ["A:runtime", "B:needs", "C:runtime"]);
        l.remove(&instance!("C"));
        assert_eq!(names(&l), ["A:runtime", "B:needs"]);
    }

    #[test]
    fn enabling_a_need_closed_in_needs_writes_closed_false() {
        let base = r#"[{"modulename":"m","instancename":"A","closed":true}]"#;
        let mut l = Layers::parse(src("needs", base), None, None).unwrap();
        l.set_closed(&instance!("A"), false);
        assert!(!l.effective()[0].need.closed());
        assert!(l.runtime_text().contains("\"closed\": false"));
    }

    #[test]
    fn a_bad_layer_entry_is_located_in_its_file() {
        let ov = "[\n{\"instancename\":\"A\",\n \"tcpport\":\"x\"}]";
        let e =
            Layers::parse(src("needs", BASE), Some(src("needs.overlay", ov)), None).unwrap_err();
        assert_eq!((e.line, e.column), (3, 2), "{e}");
        assert!(
            e.to_string().starts_with("needs.overlay:3:2: tcpport"),
            "{e}"
        );
        let rt = "[{\"modulename\":\"m\"}]";
        let e =
            Layers::parse(src("needs", BASE), None, Some(src("needs.runtime", rt))).unwrap_err();
        assert!(e.to_string().contains("missing instancename"), "{e}");
        let rt = "[{\"instancename\":\"A\",\"modulename\":\"bad name\"}]";
        let e =
            Layers::parse(src("needs", BASE), None, Some(src("needs.runtime", rt))).unwrap_err();
        assert!(e.to_string().starts_with("needs.runtime:1:"), "{e}");
    }
}
