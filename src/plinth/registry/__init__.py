"""Registry: model versions (immutable, digest-pinned, in safe formats), aliases with
their history, tags and model cards."""

from plinth.core.capability import Capability

CAPABILITY = Capability(
    name="registry",
    services=(
        "plinth.registry.service:RegistryService",
        "plinth.registry.aliases:AliasService",
        "plinth.registry.card:ModelCardService",
    ),
    routers=("plinth.registry.routes:router",),
    commands=(("models", "plinth.registry.cli:models_app"),),
    calls=("plinth.registry.client:RegistryCalls",),
    tables=("plinth.registry.tables",),
)
