"""A store written before a table gained a column still opens: the column is added in place."""

import sqlite3

from sqlmodel import select

from pwd_agent.store import LLMBatch, LLMCall, dispose_engines, session_scope


def test_columns_added_by_a_newer_version_are_added_to_an_old_store(tmp_path):
    db = tmp_path / "run.db"
    url = f"sqlite:///{db}"
    with session_scope(url) as s:
        s.add(LLMCall(agent="extractor", prompt_name="p", prompt_version="1", prompt_hash="h", model="m"))
    dispose_engines()
    with sqlite3.connect(db) as conn:  # make it look like a store from before these columns existed
        conn.execute("ALTER TABLE llmcall DROP COLUMN error")
        conn.execute("ALTER TABLE llmcall DROP COLUMN batch")
        conn.execute("DROP TABLE llmbatch")
        conn.execute("ALTER TABLE itemresult DROP COLUMN scorer")

    with session_scope(url) as s:
        [call] = s.exec(select(LLMCall)).all()
        assert call.error is None and call.agent == "extractor" and call.batch is False
        s.add(LLMBatch(input_file_id="file-1", custom_ids=["k"]))  # a table a newer version added
    dispose_engines()
    with sqlite3.connect(db) as conn:
        columns = {row[1]: row[4] for row in conn.execute("PRAGMA table_info(itemresult)")}
    assert columns["scorer"] == "'letters'"  # the model's default, so old rows read as the paper's scorer
