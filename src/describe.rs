//! What the binary tells scripts about its own rules (`mnist-tch describe`), so that the Python scripts
//! ask instead of keeping copies in step by hand: the files a run directory is made of, the model of a
//! run as the binary reads it (the layer list filled in for runs written before `config.json` had one),
//! the model `train` would build from its flags, and (through [`crate::destination::check_files`]) where
//! a file may be written.

use crate::model::{self, ModelConfig};
use crate::run_dir::{RUN_FILES, RunConfig, ToolInfo};
use anyhow::Result;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// `describe --json`'s object.
#[derive(Debug, Clone, Serialize)]
pub struct Description {
    /// The binary: its name and version, as a run's `config.json` records them.
    pub tool: ToolInfo,
    /// Every file of a run directory: no command but the training that owns the run writes them.
    pub run_files: &'static [&'static str],
    /// The run described, when one was named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<PathBuf>,
    /// The run's model, or the one the model flags describe; `layers` always filled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelConfig>,
    /// The tensors a fine-tuned run kept fixed (for the text form's parameter counts).
    #[serde(skip)]
    frozen: Vec<String>,
}

impl Description {
    /// The binary alone: its name, version and run-directory layout.
    pub fn tool() -> Description {
        Description { tool: ToolInfo::default(), run_files: &RUN_FILES, run: None, model: None, frozen: Vec::new() }
    }

    /// The run in `dir`, read (and checked) the way every command reads it.
    pub fn of_run(dir: &Path) -> Result<Description> {
        let config = RunConfig::load(dir)?;
        let frozen = config.frozen_tensors();
        Ok(Description { run: Some(dir.to_path_buf()), model: Some(config.model), frozen, ..Description::tool() })
    }

    /// A model that is not a run's (`describe --arch ...`).
    pub fn of_model(model: ModelConfig) -> Description {
        Description { model: Some(model), ..Description::tool() }
    }

    /// Pretty-printed JSON, for scripts.
    pub fn json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The same for people: the tool, the run's files, the model as `mnist-tch summary` shows it.
    pub fn text(&self) -> String {
        let mut text =
            format!("{} {}\nRun directory files: {}\n", self.tool.name, self.tool.version, self.run_files.join(", "));
        if let Some(model) = &self.model {
            let title = self.run.as_ref().map_or("from the flags".to_string(), |run| run.display().to_string());
            text += &model::summary(model, &title, &self.frozen);
        }
        text.trim_end().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_lists_every_run_file_and_the_model_with_its_layers() {
        let json: serde_json::Value = serde_json::from_str(&Description::tool().json().unwrap()).unwrap();
        assert_eq!(json["run_files"].as_array().unwrap().len(), RUN_FILES.len());
        assert_eq!(json["tool"]["name"], "mnist-tch");
        assert!(json.get("model").is_none() && json.get("run").is_none());
        let described = Description::of_model(ModelConfig::default());
        let json: serde_json::Value = serde_json::from_str(&described.json().unwrap()).unwrap();
        assert_eq!(json["model"]["layers"].as_array().unwrap().len(), 4);
        assert!(described.text().contains("Total params: 101,770"), "{}", described.text());
    }
}
