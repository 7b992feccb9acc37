//! Writes every JSON Schema to `schemas/` (or the directory given as argument).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas"));
    std::fs::create_dir_all(&dir)?;
    for (name, schema) in allex_protocol::schema::all() {
        let path = dir.join(name);
        std::fs::write(&path, allex_protocol::schema::render(&schema))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
