#!/bin/sh
echo "1..0 # SKIP harness not written yet"
