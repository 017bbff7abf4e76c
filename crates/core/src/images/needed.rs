//! The images `lab up` needs, checked before it makes anything: the driver's (the docker
//! driver's node image) and the registry image. A first run on a machine that cannot pull
//! learns of every missing image at once, with how to get each, instead of one per try (and
//! the registry image only once every node had been made and had joined).

use bollard::errors::Error as EngineError;

use crate::cluster::Nodes;
use crate::driver::MissingImage;
use crate::error::{engine_message, Error};

/// How to get a registry image on a machine that cannot pull.
pub const REGISTRY_HOW: &str = "build one with scripts/offline-images.sh and pass --registry-image \
     lab-offline/registry:2 (or set [registry] image in lab.toml)";

/// The registry image, if the nodes will not be able to have it: the local engine (where
/// lab copies it from) lacks it, and that engine's registry lookup for it fails. Where there
/// is no local engine lab cannot tell, and the nodes pull it themselves, as they would anyway.
pub async fn missing_registry_image(rt: &dyn Nodes, image: &str) -> Option<MissingImage> {
    let local = rt.images().local_engine().await.ok()?;
    let absent = match local.inspect_image(image).await {
        Ok(_) => return None,
        Err(e) => e,
    };
    // Asks the image's registry for its manifest (`docker manifest inspect`'s question),
    // through the local engine, so its proxies and mirrors apply; nothing is pulled.
    let lookup = match local.inspect_registry_image(image, None).await {
        Ok(_) => return None,
        Err(e) => e,
    };
    Some(MissingImage {
        image: image.to_string(),
        what: "the registry image (--registry-image)".into(),
        why: why(&absent, &lookup),
        how: REGISTRY_HOW.into(),
    })
}

fn why(absent: &EngineError, lookup: &EngineError) -> String {
    let absent = match absent {
        EngineError::DockerResponseServerError { status_code: 404, .. } => "not in the local engine".to_string(),
        other => format!("the local engine cannot say whether it has it ({})", engine_message(other)),
    };
    format!("{absent}, and its registry cannot be asked for it: {}", engine_message(lookup))
}

/// The one error that names every missing image, each with how to get it: exit 1, and
/// nothing was made. `None` when nothing is missing.
pub fn missing_error(missing: &[MissingImage]) -> Option<Error> {
    if missing.is_empty() {
        return None;
    }
    let noun = if missing.len() == 1 { "image" } else { "images" };
    let what: Vec<String> = missing.iter().map(|m| format!("{} {} ({})", m.what, m.image, m.why)).collect();
    let how: Vec<String> = missing.iter().map(|m| format!("for {}: {}", m.what, m.how)).collect();
    Some(
        Error::op(
            "check the images lab up needs",
            format!("{} {noun} missing: {}; nothing was made", missing.len(), what.join("; ")),
        )
        .with_hint(how.join("; ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(what: &str, image: &str) -> MissingImage {
        MissingImage { image: image.into(), what: what.into(), why: "gone".into(), how: format!("get {image}") }
    }

    /// Issue 18, item 13: every missing image in one message, each with how to get it.
    #[test]
    fn every_missing_image_is_named_in_one_error_with_how_to_get_it() {
        assert!(missing_error(&[]).is_none());
        let e = missing_error(&[
            missing("the node image (--node-image)", "docker:dind"),
            missing("the registry image (--registry-image)", "registry:2"),
        ])
        .expect("an error");
        let text = e.to_string();
        assert!(text.contains("2 images missing"), "{text}");
        assert!(text.contains("the node image (--node-image) docker:dind (gone)"), "{text}");
        assert!(text.contains("the registry image (--registry-image) registry:2 (gone)"), "{text}");
        assert!(text.contains("nothing was made"), "{text}");
        let hint = e.hint().expect("a hint").to_string();
        assert!(hint.contains("get docker:dind") && hint.contains("get registry:2"), "{hint}");
        assert_eq!(e.exit_code(), 1);
        let one = missing_error(&[missing("the registry image (--registry-image)", "registry:2")]).unwrap();
        assert!(one.to_string().contains("1 image missing"), "{one}");
    }
}
