"""The README results-table row is computed from a run's report.json."""

from __future__ import annotations

from maniflow_rl.pipeline.report import RESULTS_TABLE_HEADER, results_table_row


def test_row_has_group_rates_gain_and_budget_in_header_order():
    report = {"task": "metaworld/stick-push-v3", "demos": 10,
              "success_before": 0.32, "success_before_ci": [0.208, 0.458],
              "success_after": 0.7, "success_after_ci": [0.562, 0.809],
              "success_gain": 0.7 - 0.32, "min_eval_success_during_rl": 0.25,
              "finetune_env_steps": 153600, "total_wall_s": 3930.0}
    cells = [c.strip() for c in results_table_row(report).strip("|").split("|")]
    header = [c.strip() for c in RESULTS_TABLE_HEADER.splitlines()[0].strip("|").split("|")]
    assert len(cells) == len(header)
    assert cells == ["stick-push-v3", "very hard", "PPO", "10", "32% [21%, 46%]",
                     "70% [56%, 81%]", "+38", "25%", "153,600", "66 min"]
    cells = [c.strip() for c in results_table_row({**report, "algorithm": "dsrl"}).split("|")]
    assert cells[3] == "DSRL"
    cells = [c.strip() for c in results_table_row({**report, "eval_reference_success": 0.45})
             .strip("|").split("|")]
    assert cells[7] == "25% (start 45%)"


def test_row_without_evaluations_during_rl_shows_a_dash():
    report = {"task": "assembly-v3", "demos": 5, "success_before": 0.5,
              "success_before_ci": [0.3, 0.7], "success_after": 0.4, "success_after_ci": [0.2, 0.6],
              "success_gain": -0.1, "min_eval_success_during_rl": None,
              "finetune_env_steps": 0, "total_wall_s": 59.0}
    cells = [c.strip() for c in results_table_row(report).strip("|").split("|")]
    assert cells[1] == "hard" and cells[6] == "-10" and cells[7] == "-" and cells[9] == "1 min"


def test_after_rl_cell_names_the_kept_policy_when_it_is_not_the_last():
    report = {"task": "metaworld/pick-place-v3", "demos": 10, "success_before": 0.44,
              "success_before_ci": [0.31, 0.58], "success_after": 0.44,
              "success_after_ci": [0.31, 0.58], "success_gain": 0.0,
              "success_after_last": 0.36, "min_eval_success_during_rl": 0.3,
              "finetune_env_steps": 100032, "total_wall_s": 1900.0}

    def after_cell(selection):
        row = results_table_row({**report, "selection": selection})
        return [c.strip() for c in row.strip("|").split("|")][5]

    start = {"is_start": True, "is_last": False, "global_step": 0, "success_rate": 0.4}
    assert after_cell(start) == "44% [31%, 58%] (start kept; last 36%)"
    middle = {"is_start": False, "is_last": False, "global_step": 64000, "success_rate": 0.5}
    assert after_cell(middle) == "44% [31%, 58%] (kept step 64,000; last 36%)"
    last = {"is_start": False, "is_last": True, "global_step": 100032, "success_rate": 0.5}
    assert after_cell(last) == after_cell(None) == "44% [31%, 58%]"


def test_report_says_which_policy_was_kept_and_why():
    from maniflow_rl.pipeline.report import _kept

    def kept(**selection):
        return _kept({"selection": {"mode": "best", "is_start": False, "is_last": False,
                                    "global_step": 64000, "success_rate": 0.5, **selection}})

    assert kept(mode="last", success_rate=None) == \
        "the last checkpoint (`finetune.select=last`)"
    assert "no evaluation during RL beat it" in kept(is_start=True, num_candidates=8)
    assert "the only candidate" in kept(is_start=True, num_candidates=1)
    assert kept().startswith("the checkpoint of env step 64,000: 50%")
    assert ", the last one" in kept(is_last=True)
    assert kept(success_rate=None) == "the last checkpoint (env step 64,000)"
