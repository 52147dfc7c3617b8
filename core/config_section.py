"""The base of every settings section (``core/config_*.py``): a section reads its own
``STREAMREC_*`` variables, so building one alone (in a test, or a component given only its
section) sees the same environment the whole :class:`core.config.Settings` does."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "STREAMREC_"


class Section(BaseSettings):
    # populate_by_name: a field whose variable does not follow the section's prefix (a
    # validation_alias, e.g. STREAMREC_TOPIC_PREFIX in the Kafka section) is still given by
    # its field name in code.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Field name -> its environment variable (``STREAMREC_...``)."""
        prefix = str(cls.model_config.get("env_prefix", ENV_PREFIX))
        out = {}
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            out[name] = (alias if isinstance(alias, str) else prefix + name).upper()
        return out
