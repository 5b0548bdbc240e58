//! The HTML templates, embedded in the binary (the image has no files to
//! ship and the pages need no external assets) and rendered with
//! minijinja, HTML auto-escaping on for every `.html` template.

use minijinja::Environment;
use serde::Serialize;

use crate::{errors::AppError, mesh};

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../templates/layout.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("home.html", include_str!("../templates/home.html")),
    ("product.html", include_str!("../templates/product.html")),
    ("order.html", include_str!("../templates/order.html")),
    ("mesh.html", include_str!("../templates/mesh.html")),
    ("error.html", include_str!("../templates/error.html")),
];

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Parses every template now, so a broken one stops startup rather than
    /// failing the first request for that page.
    pub fn new() -> anyhow::Result<Self> {
        let mut env = Environment::new();
        // Auto-escaping follows the name: the `.html` templates escape every
        // value, so product names and backend messages cannot inject markup.
        env.set_auto_escape_callback(minijinja::default_auto_escape_callback);
        // Undefined values are bugs in a view model: fail loudly, except in `if`
        // tests, where an absent optional field (e.g. `rating`) is just false.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
        env.add_function("version_color", |v: String| mesh::version_color(&v).to_owned());
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|e| anyhow::anyhow!("template {name}: {e}"))?;
        }
        Ok(Self { env })
    }

    pub fn render(&self, name: &str, ctx: impl Serialize) -> Result<String, AppError> {
        let tpl = self
            .env
            .get_template(name)
            .map_err(|e| AppError::internal(format!("template {name}: {e}")))?;
        tpl.render(ctx).map_err(|e| {
            tracing::error!(template = name, error = %e, "rendering failed");
            AppError::internal(format!("rendering the {name} page failed"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        Templates::new().unwrap();
    }
}
