"""What lossbench concludes from finished runs: statistics (``.stats``), the sweep report
(``.report``), plots (``.plots``) and the reproduction of the forum's claims (``.reproduce``).
Everything here reads ``summary.json`` files (or a committed report's ``runs.csv``); nothing trains
except ``.reproduce.jobs``."""
