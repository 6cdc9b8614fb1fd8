# Role idle: only the link (the scenario watches it from dom0); stays up with pc_stay=1.
check "gateway answers ping" ping -q -c 1 -W 5 "$GW"
