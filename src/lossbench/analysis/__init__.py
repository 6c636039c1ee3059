"""What lossbench concludes from finished runs: statistics (:mod:`.stats`), the sweep report
(:mod:`.report`), plots (:mod:`.plots`) and the reproduction of the forum's claims (:mod:`.reproduce`).
Everything here reads ``summary.json`` files (or a committed report's ``runs.csv``); nothing trains
except :mod:`.reproduce.jobs`."""
