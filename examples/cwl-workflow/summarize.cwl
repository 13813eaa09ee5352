# A sub-workflow of one step, to show nesting.
cwlVersion: v1.2
class: Workflow
inputs:
  counts: File[]
outputs:
  total:
    type: File
    outputSource: sum/total
steps:
  sum:
    run: tools/sum.cwl
    in: {counts: counts}
    out: [total]
