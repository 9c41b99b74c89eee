"""Offline sample datasets: schemas, determinism, value domains, built-in effects, loading."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

import mlengine.data.samples as samples
from mlengine.data.samples import SAMPLES, SampleDataset, load_sample
from mlengine.errors import InvalidArgument, NotFound, OperationFailed

NAMES = ["iris", "natality", "blackfriday", "census"]


def frame(name: str, rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    return SAMPLES[name].batches(rows, seed).read_all().to_pandas()


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield con
    con.close()


@pytest.fixture(scope="module")
def natality() -> pd.DataFrame:
    return frame("natality", 300_000, seed=7)


@pytest.fixture(scope="module")
def blackfriday() -> pd.DataFrame:
    return frame("blackfriday")  # the Kaggle size, 550,068 rows


@pytest.fixture(scope="module")
def census() -> pd.DataFrame:
    return frame("census", 150_000, seed=3)


# --- the surface --------------------------------------------------------------------------


def test_all_is_exactly_the_public_names() -> None:
    assert sorted(samples.__all__) == ["SAMPLES", "SampleDataset", "load_sample"]
    public = {n for n in vars(samples) if not n.startswith("_")} - {"annotations"}
    assert public == set(samples.__all__)


def test_registry_holds_the_four_datasets_as_frozen_records() -> None:
    assert sorted(SAMPLES) == sorted(NAMES)
    with pytest.raises(TypeError):
        SAMPLES["x"] = SAMPLES["iris"]  # type: ignore[index]
    for name, dataset in SAMPLES.items():
        assert isinstance(dataset, SampleDataset)
        assert dataset.name == name and dataset.description and dataset.default_rows >= 150
        with pytest.raises(dataclasses.FrozenInstanceError):
            dataset.default_rows = 1  # type: ignore[misc]


@pytest.mark.parametrize("name", NAMES)
def test_batches_stream_the_schema_and_row_count(name: str) -> None:
    dataset = SAMPLES[name]
    reader = dataset.batches(100 if name == "iris" else 70_000, seed=1, batch_rows=30_000)
    assert isinstance(reader, pa.RecordBatchReader)
    assert reader.schema == dataset.schema
    sizes = [batch.num_rows for batch in reader]
    assert sizes == ([100] if name == "iris" else [30_000, 30_000, 10_000])


def test_default_row_counts() -> None:
    assert {name: d.default_rows for name, d in SAMPLES.items()} == {
        "iris": 150,
        "natality": 1_000_000,
        "blackfriday": 550_068,
        "census": 32_561,
    }
    assert frame("census").shape == (32_561, 15)
    assert frame("iris").shape == (150, 6)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rows": 0}, "rows"),
        ({"rows": -5}, "rows"),
        ({"rows": 2.5}, "rows"),
        ({"rows": True}, "rows"),
        ({"seed": -1}, "seed"),
        ({"batch_rows": 0}, "batch_rows"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        SAMPLES["natality"].batches(**kwargs)
    message = str(caught.value)
    assert message.startswith(f"The '{field}' field of sample dataset 'natality' must be")
    assert message.endswith(f"Got {next(iter(kwargs.values()))!r}.")


# --- determinism --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["natality", "blackfriday", "census"])
def test_same_seed_same_table_other_seed_other_table(name: str) -> None:
    first = SAMPLES[name].batches(70_000, seed=11).read_all()
    again = SAMPLES[name].batches(70_000, seed=11, batch_rows=999).read_all()
    other = SAMPLES[name].batches(70_000, seed=12).read_all()
    assert first.equals(again)  # batch size does not change the rows
    assert not first.equals(other)
    assert first.num_rows == other.num_rows == 70_000


@pytest.mark.parametrize("name", NAMES)
def test_one_row_and_seeds_beyond_64_bits(name: str) -> None:
    for seed in (0, 1, 2**64 + 1, 2**70):
        assert SAMPLES[name].batches(1, seed=seed).read_all().num_rows == 1
    first, other = frame(name, 3, seed=2**70), frame(name, 3, seed=2**70 + 1)
    assert not first.equals(other)


def test_worker_threads_do_not_change_the_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlengine.data.samples import _base

    threaded = SAMPLES["blackfriday"].batches(200_000, seed=8).read_all()
    monkeypatch.setattr(_base, "PREFETCH_WORKERS", 1)
    assert SAMPLES["blackfriday"].batches(200_000, seed=8).read_all().equals(threaded)


@pytest.mark.parametrize("name", ["natality", "census"])
def test_row_i_depends_only_on_seed_and_i(name: str) -> None:
    small = SAMPLES[name].batches(1_000, seed=5).read_all()
    large = SAMPLES[name].batches(140_000, seed=5, batch_rows=4_096).read_all()
    assert large.slice(0, 1_000).equals(small)


def test_iris_rows_are_the_real_flowers() -> None:
    from sklearn.datasets import load_iris

    real = load_iris()
    full = frame("iris", seed=99)
    np.testing.assert_array_equal(full.iloc[:, :4].to_numpy(), real.data)
    np.testing.assert_array_equal(full.label, real.target)
    assert full.species.tolist() == [str(real.target_names[t]) for t in real.target]
    assert list(full.columns) == [
        "sepal_length", "sepal_width", "petal_length", "petal_width", "species", "label",
    ]  # fmt: skip

    some = frame("iris", 30, seed=1)
    assert len(some) == 30 and some.species.nunique() == 3  # a sample, not the first 30 rows
    assert some.equals(frame("iris", 30, seed=1)) and not some.equals(frame("iris", 30, seed=2))
    rows = {tuple(r) for r in full.itertuples(index=False)}
    assert all(tuple(r) in rows for r in some.itertuples(index=False))
    with pytest.raises(InvalidArgument, match=r"an integer from 1 to 150\. Got 151"):
        SAMPLES["iris"].batches(151)


# --- natality -----------------------------------------------------------------------------


def test_natality_has_the_public_tables_columns_and_types() -> None:
    schema = SAMPLES["natality"].schema
    expected = {
        "source_year": pa.int64(), "year": pa.int64(), "month": pa.int64(), "day": pa.int64(),
        "wday": pa.int64(), "state": pa.string(), "is_male": pa.bool_(),
        "child_race": pa.int64(), "weight_pounds": pa.float64(), "plurality": pa.int64(),
        "apgar_1min": pa.int64(), "apgar_5min": pa.int64(),
        "mother_residence_state": pa.string(), "mother_race": pa.int64(),
        "mother_age": pa.int64(), "gestation_weeks": pa.int64(), "lmp": pa.string(),
        "mother_married": pa.bool_(), "mother_birth_state": pa.string(),
        "cigarette_use": pa.bool_(), "cigarettes_per_day": pa.int64(),
        "alcohol_use": pa.bool_(), "drinks_per_week": pa.int64(),
        "weight_gain_pounds": pa.int64(), "born_alive_alive": pa.int64(),
        "born_alive_dead": pa.int64(), "born_dead": pa.int64(), "ever_born": pa.int64(),
        "father_race": pa.int64(), "father_age": pa.int64(), "record_weight": pa.int64(),
    }  # fmt: skip
    assert dict(zip(schema.names, schema.types, strict=True)) == expected
    assert schema.names == list(expected)


def test_natality_value_domains(natality: pd.DataFrame) -> None:
    df = natality
    assert df.year.between(1969, 2008).all() and set(df.year) == set(range(1969, 2009))
    assert (df.source_year == df.year).all()
    assert df.month.between(1, 12).all() and df.wday.between(1, 7).all()
    assert (df.day.isna() == (df.year >= 1989)).all()  # day of birth only up to 1988
    known = df.dropna(subset=["day"])
    dates = pd.to_datetime(dict(year=known.year, month=known.month, day=known.day))
    assert ((dates.dt.day_of_week + 1) % 7 + 1 == known.wday).all()  # 1 = Sunday
    assert (df.state.isna() == (df.year > 2004)).all()
    assert set(df.state.dropna()) <= set(df.mother_residence_state.dropna()) | {"DC"}
    assert df.state.dropna().str.fullmatch("[A-Z]{2}").all()
    assert df.plurality.between(1, 5).all()
    shares = df.plurality.value_counts(normalize=True)
    assert 0.96 < shares[1] < 0.985 and 0.015 < shares[2] < 0.04 and shares[3] < 0.005
    assert df.mother_age.between(12, 54).all() and 25 < df.mother_age.mean() < 28
    assert 0.505 < df.is_male.mean() < 0.52
    assert set(df.mother_race) <= {1, 2, 3, 4, 5, 6, 7, 9, 18, 28, 39, 48}
    # gestation_weeks: 99 means unknown and a few rows are blank, as in the public table.
    gestation = df.gestation_weeks
    assert 0.004 < (gestation == 99).mean() < 0.015 and 0.001 < gestation.isna().mean() < 0.006
    assert gestation[gestation != 99].dropna().between(17, 47).all()
    assert df.lmp.dropna().str.fullmatch(r"\d{8}").all()
    assert (df.lmp.isna() == gestation.isna()).all()
    assert (df.lmp[gestation == 99] == "99999999").all()
    assert (df.apgar_5min.isna() == ((df.year < 1978) | (df.year > 2002))).all()
    assert df.apgar_5min.dropna().isin([*range(11), 99]).all()
    assert df.cigarette_use[df.year < 1989].isna().all()
    assert df.cigarette_use[df.year >= 1989].notna().mean() > 0.97
    assert (df.cigarettes_per_day[df.cigarette_use.isin([True])] > 0).all()
    assert (df.cigarettes_per_day[df.cigarette_use.isin([False])] == 0).all()
    parity = df[df.ever_born != 99]
    assert (parity.ever_born == parity.born_alive_alive + parity.born_alive_dead + 1).all()
    assert set(df.record_weight) == {1, 2} and (df.record_weight[df.year >= 1985] == 1).all()
    assert 0 < df.weight_pounds.isna().mean() < 0.003
    assert df.weight_pounds.dropna().between(0.5, 14.6).all()


def test_natality_weight_effects_match_the_tutorial(natality: pd.DataFrame) -> None:
    df = natality.dropna(subset=["weight_pounds", "gestation_weeks"])
    df = df[df.gestation_weeks != 99]
    singles = df[df.plurality == 1]
    by_weeks = singles.groupby("gestation_weeks").weight_pounds.mean()
    assert 2.0 < by_weeks[28] < 3.0
    assert 7.3 < by_weeks[40] < 8.1
    assert by_weeks.loc[26:41].is_monotonic_increasing
    by_plurality = df.groupby("plurality").weight_pounds.mean()
    assert 4.6 < by_plurality[2] < 5.6 and by_plurality[3] < by_plurality[2]
    assert 7.0 < by_plurality[1] < 7.6
    boys_minus_girls = df.groupby("is_male").weight_pounds.mean().diff().iloc[-1]
    assert 0.2 < boys_minus_girls < 0.4

    features = ["is_male", "mother_age", "plurality", "gestation_weeks"]
    x = df[features].astype(float).to_numpy()
    model = LinearRegression().fit(x, df.weight_pounds)
    coef = dict(zip(features, model.coef_, strict=True))
    assert coef["gestation_weeks"] > 0.25
    assert coef["plurality"] < -0.4
    assert 0.2 < coef["is_male"] < 0.4
    assert model.score(x, df.weight_pounds) > 0.3
    # The mother's age: a hump that peaks around 30.
    quadratic = LinearRegression().fit(np.column_stack([x, x[:, 1] ** 2]), df.weight_pounds)
    age, age_squared = quadratic.coef_[1], quadratic.coef_[4]
    assert age_squared < 0
    assert 27 < -age / (2 * age_squared) < 34


# --- blackfriday --------------------------------------------------------------------------


def test_blackfriday_schema_and_value_domains(blackfriday: pd.DataFrame) -> None:
    df = blackfriday
    assert list(df.columns) == [
        "User_ID", "Product_ID", "Gender", "Age", "Occupation", "City_Category",
        "Stay_In_Current_City_Years", "Marital_Status", "Product_Category_1",
        "Product_Category_2", "Product_Category_3", "Purchase",
    ]  # fmt: skip
    assert len(df) == 550_068
    assert df.User_ID.min() >= 1_000_001 and df.User_ID.max() <= 1_000_001 + 5_891
    assert df.Product_ID.str.fullmatch(r"P00\d{4}42").all()
    assert set(df.Gender) == {"F", "M"}
    assert set(df.Age) == {"0-17", "18-25", "26-35", "36-45", "46-50", "51-55", "55+"}
    assert set(df.Occupation) == set(range(21))
    assert set(df.City_Category) == {"A", "B", "C"}
    assert set(df.Stay_In_Current_City_Years) == {"0", "1", "2", "3", "4+"}
    assert set(df.Marital_Status) == {0, 1}
    assert set(df.Product_Category_1) == set(range(1, 21))
    second, third = df.Product_Category_2.dropna(), df.Product_Category_3.dropna()
    assert second.between(2, 18).all() and third.between(3, 18).all()
    assert 0.25 < df.Product_Category_2.isna().mean() < 0.4
    assert 0.6 < df.Product_Category_3.isna().mean() < 0.8
    assert df.Product_Category_3.isna()[df.Product_Category_2.isna()].all()
    assert df.Purchase.between(12, 23_961).all()
    assert 8_000 < df.Purchase.mean() < 10_500
    assert df.groupby("Product_Category_1").Purchase.mean().idxmax() == 10


def test_blackfriday_users_products_and_vip_spend(blackfriday: pd.DataFrame) -> None:
    df = blackfriday
    assert 5_800 <= df.User_ID.nunique() <= 5_891
    assert 3_300 <= df.Product_ID.nunique() <= 3_631
    attributes = ["Gender", "Age", "Occupation", "City_Category",
                  "Stay_In_Current_City_Years", "Marital_Status"]  # fmt: skip
    assert (df.groupby("User_ID")[attributes].nunique() == 1).all().all()
    products = df.groupby("Product_ID")[["Product_Category_1", "Product_Category_2"]]
    assert (products.nunique(dropna=False) == 1).all().all()
    users = df.groupby("User_ID")
    assert (users.Age.first() == "0-17").mean() < 0.06
    assert (users.Marital_Status.first()[users.Age.first() == "0-17"] == 0).all()
    assert 0.65 < (users.Gender.first() == "M").mean() < 0.78

    rows_per_user = users.size()
    assert 40 < rows_per_user.median() < 70 and rows_per_user.max() > 600
    # The VIP pipeline: total spend per user, VIPs above the 90th percentile.
    spend = users.Purchase.sum()
    vip = spend > spend.quantile(0.9)
    assert 0.09 < vip.mean() < 0.11
    assert 0.3 < spend[vip].sum() / spend.sum() < 0.5
    assert spend[vip].mean() > 5 * spend[~vip].mean()


def test_blackfriday_users_scale_with_rows() -> None:
    df = frame("blackfriday", 93_400, seed=2)
    assert 950 <= df.User_ID.nunique() <= 1_000
    assert df.User_ID.between(1_000_001, 1_001_000).all()


# --- census -------------------------------------------------------------------------------


def test_census_schema_and_value_domains(census: pd.DataFrame) -> None:
    df = census
    assert list(df.columns) == [
        "age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
        "occupation", "relationship", "race", "gender", "capital_gain", "capital_loss",
        "hours_per_week", "native_country", "income_bracket",
    ]  # fmt: skip
    assert df.age.between(17, 90).all() and 36 < df.age.mean() < 41
    assert set(df.income_bracket) == {"<=50K", ">50K"}
    assert set(df.gender) == {"Female", "Male"}
    assert df.education_num.between(1, 16).all()
    assert (df.groupby("education").education_num.nunique() == 1).all()
    assert df.groupby("education").education_num.first()["Bachelors"] == 13
    assert set(df.workclass) >= {"Private", "Self-emp-not-inc", "Federal-gov", "?"}
    assert (df.workclass[df.occupation == "?"].isin(["?", "Never-worked"])).all()
    assert df.native_country.value_counts(normalize=True)["United-States"] > 0.85
    assert df.hours_per_week.between(1, 99).all() and (df.hours_per_week == 40).mean() > 0.4
    assert 0.06 < (df.capital_gain > 0).mean() < 0.12
    assert not ((df.capital_gain > 0) & (df.capital_loss > 0)).any()
    husbands = df[df.relationship == "Husband"]
    assert (husbands.gender == "Male").all()
    assert husbands.marital_status.isin(["Married-civ-spouse", "Married-AF-spouse"]).all()
    assert 0.35 < len(husbands) / len(df) < 0.45  # UCI's share of husbands (wives: ~5%)
    for column in ["workclass", "education", "occupation", "native_country", "income_bracket"]:
        assert not df[column].str.startswith(" ").any()  # no leading space as in the raw files


def test_census_income_depends_on_education_age_hours_gains(census: pd.DataFrame) -> None:
    df = census
    rich = (df.income_bracket == ">50K").to_numpy()
    assert 0.22 < rich.mean() < 0.26
    rate = pd.Series(rich).groupby(df.education_num.to_numpy()).mean()
    assert rate[16] > rate[13] > rate[9] > rate[6]
    features = pd.DataFrame(
        {
            "education_num": df.education_num,
            "age": df.age,
            "hours_per_week": df.hours_per_week,
            "capital_gain": np.log1p(df.capital_gain),
        }
    )
    scaled = (features - features.mean()) / features.std()
    model = LogisticRegression(max_iter=500).fit(scaled, rich)
    assert (model.coef_[0] > 0.1).all(), dict(zip(features, model.coef_[0], strict=True))


# --- loading into the warehouse -----------------------------------------------------------


def test_load_sample_creates_the_table(connection: duckdb.DuckDBPyConnection) -> None:
    assert load_sample(connection, "census", rows=5_000, seed=4) == 5_000
    types = dict(connection.execute("DESCRIBE samples.census").fetchall()[i][:2] for i in (0, 1))
    assert types == {"age": "BIGINT", "workclass": "VARCHAR"}
    loaded = connection.execute("SELECT * FROM samples.census").fetch_df()
    assert loaded.equals(frame("census", 5_000, seed=4))

    assert load_sample(connection, "iris") == 150
    column_types = connection.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'samples' AND table_name = 'iris'"
    ).fetchall()
    assert column_types[0] == ("sepal_length", "DOUBLE") and column_types[-2:] == [
        ("species", "VARCHAR"),
        ("label", "BIGINT"),
    ]
    tables = connection.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'samples'"
    ).fetchall()
    assert sorted(tables) == [("census",), ("iris",)]  # no leftover loading table


def test_load_sample_replaces_and_leaves_the_callers_work_alone(
    connection: duckdb.DuckDBPyConnection,
) -> None:
    load_sample(connection, "natality", rows=2_000)
    pending = connection.execute("SELECT 1 UNION ALL SELECT 2")
    assert pending.fetchone() == (1,)  # an unfinished result on the caller's connection
    assert load_sample(connection, "natality", rows=3_000, seed=1) == 3_000
    assert pending.fetchone() == (2,)
    count = connection.execute("SELECT count(*), max(year) FROM samples.natality").fetchall()
    assert count[0][0] == 3_000 and count[0][1] <= 2008


def test_unknown_names_and_bad_rows_touch_nothing(connection: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(NotFound) as caught:
        load_sample(connection, "penguins")
    assert str(caught.value) == (
        "Sample dataset 'penguins' not found. "
        "Known sample datasets: blackfriday, census, iris, natality."
    )
    with pytest.raises(InvalidArgument, match="The 'rows' field of sample dataset 'census'"):
        load_sample(connection, "census", rows=0)
    schemas = connection.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
    assert ("samples",) not in schemas


def test_a_failure_mid_load_keeps_the_old_table(
    connection: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_sample(connection, "blackfriday", rows=10_000) == 10_000
    before = connection.execute("SELECT sum(Purchase) FROM samples.blackfriday").fetchall()
    real_batches = SampleDataset.batches

    def failing(self: SampleDataset, *args: object, **kwargs: object) -> pa.RecordBatchReader:
        reader = real_batches(self, *args, **kwargs)  # type: ignore[arg-type]

        def broken() -> Iterator[pa.RecordBatch]:
            for number, batch in enumerate(reader):
                if number == 2:
                    raise RuntimeError("the generator broke mid-stream")
                yield batch

        return pa.RecordBatchReader.from_batches(reader.schema, broken())

    monkeypatch.setattr(SampleDataset, "batches", failing)
    with pytest.raises(OperationFailed, match="Loading sample dataset 'blackfriday' failed"):
        load_sample(connection, "blackfriday", rows=500_000, seed=9)
    after = connection.execute("SELECT count(*), sum(Purchase) FROM samples.blackfriday")
    assert after.fetchall() == [(10_000, before[0][0])]
    tables = connection.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'samples'"
    ).fetchall()
    assert tables == [("blackfriday",)]
    monkeypatch.undo()
    assert load_sample(connection, "blackfriday", rows=20_000) == 20_000


# --- bounded memory -----------------------------------------------------------------------

MEMORY_PROBE = """
import resource, sys
import duckdb
from mlengine.data.samples import SAMPLES, load_sample

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

name, rows, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
connection = None
if target != "-":
    connection = duckdb.connect(target)
    connection.execute("SET memory_limit = '128MB'")
    load_sample(connection, name, rows=300_000)  # warm up: imports, pools, threads
else:
    for _ in SAMPLES[name].batches(300_000):
        pass
before = peak_mb()
size = 0
for batch in SAMPLES[name].batches(rows):
    size += batch.nbytes
if connection is not None:
    assert load_sample(connection, name, rows=rows) == rows
print(before, peak_mb(), size / 2**20)
"""


def peak_growth(name: str, rows: int, target: str) -> tuple[float, float]:
    """(growth of peak RSS in MB while streaming/loading, table size in Arrow MB)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEMORY_PROBE), name, str(rows), target],
        capture_output=True,
        text=True,
        check=True,
        timeout=240,
    )
    before, after, size = map(float, result.stdout.split())
    return after - before, size


def test_streaming_three_million_rows_holds_a_few_blocks() -> None:
    growth, size = peak_growth("blackfriday", 3_000_000, "-")
    assert size > 250
    assert growth < 40, f"peak RSS grew {growth:.0f} MB streaming {size:.0f} MB of rows"


@pytest.mark.slow
def test_loading_millions_of_rows_streams_into_duckdb(tmp_path: Path) -> None:
    growth, size = peak_growth("blackfriday", 3_000_000, str(tmp_path / "big.duckdb"))
    assert growth < size / 2, f"peak RSS grew {growth:.0f} MB loading {size:.0f} MB of rows"


def test_docs_describe_every_dataset() -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "data.md").read_text()
    for name, dataset in SAMPLES.items():
        assert f"samples.{name}" in text
        for column in dataset.schema.names:
            assert re.search(rf"\b{re.escape(column)}\b", text), (name, column)
