#!/usr/bin/env cwl-runner
# Counts the lines of each input file (scatter), then adds the counts up in
# a sub-workflow.
cwlVersion: v1.2
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
  SubworkflowFeatureRequirement: {}
inputs:
  files: File[]
outputs:
  counts:
    type: File[]
    outputSource: count/count
  total:
    type: File
    outputSource: summarize/total
steps:
  count:
    run: tools/wc.cwl
    scatter: file
    in: {file: files}
    out: [count]
  summarize:
    run: summarize.cwl
    in: {counts: count/count}
    out: [total]
