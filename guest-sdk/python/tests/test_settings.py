"""Native tests of the SDK's pure parts (settings, errors, progress): `python3 -m unittest discover -s tests` in
guest-sdk/python."""

import sys
import unittest
import unittest.mock
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import stepwise  # noqa: E402
from stepwise.step import call_json  # noqa: E402


@dataclass
class Table:
    name: str
    rows: int = 0


@dataclass
class Settings:
    tables: list[Table] = field(default_factory=list)
    file: str = "backup.sql"
    note: Optional[str] = None


def dump(settings: Settings) -> dict:
    return {"tables": [t.name for t in settings.tables], "file": settings.file}


class SettingsTest(unittest.TestCase):
    def error(self, settings: str) -> stepwise.StepError:
        with self.assertRaises(stepwise.StepError) as caught:
            call_json(dump, settings)
        self.assertTrue(caught.exception.permanent, "settings errors are permanent")
        return caught.exception

    def test_output_is_json_and_defaults_apply(self):
        self.assertEqual(
            call_json(dump, '{"tables": [{"name": "a"}]}'),
            '{"tables": ["a"], "file": "backup.sql"}',
        )

    def test_absent_settings_read_as_empty(self):
        self.assertEqual(call_json(dump, ""), '{"tables": [], "file": "backup.sql"}')
        self.assertEqual(call_json(dump, "null"), '{"tables": [], "file": "backup.sql"}')

    def test_a_bad_field_is_named(self):
        self.assertEqual(
            self.error('{"tables": [{"name": 3}]}').message,
            "invalid settings at `tables[0].name`: expected a string, got the number 3",
        )
        self.assertEqual(
            self.error('{"tables": [{}]}').message,
            "invalid settings at `tables[0]`: missing field `name`",
        )
        self.assertEqual(
            self.error('{"tabels": []}').message,
            "invalid settings: unknown field `tabels`; the fields are `tables`, `file`, `note`",
        )
        self.assertIn("expected an integer", self.error('{"tables": [{"name": "a", "rows": 1.5}]}').message)

    def test_text_that_is_not_json_is_refused(self):
        self.assertTrue(self.error("{} x").message.startswith("invalid settings: "))

    def test_a_step_without_settings_ignores_them(self):
        def ping() -> str:
            return "pong"

        self.assertEqual(call_json(ping, '{"any": 1}'), '"pong"')

    def test_progress_counts_whole_percents(self):
        reported = []
        report = lambda percent, message="": reported.append(percent)  # noqa: E731
        with unittest.mock.patch("stepwise.host.progress", report):
            progress = stepwise.Progress(1000)
            for _ in range(1000):
                progress.advance("row")
        # 0 %, each whole percent after it, and the last item.
        self.assertEqual(len(reported), 101)
        self.assertEqual(reported[-1], 100.0)


if __name__ == "__main__":
    unittest.main()
