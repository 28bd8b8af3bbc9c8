// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

interface ILivepeerToken {
    function totalSupply() external view returns (uint256);
    function balanceOf(address account) external view returns (uint256);
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
    function mint(address to, uint256 amount) external;
}

interface IRoundsManager {
    function currentRound() external view returns (uint256);
    function currentRoundInitialized() external view returns (bool);
    function currentRoundLocked() external view returns (bool);
    function blockHashForRound(uint256 round) external view returns (bytes32);
}

interface IBondingManager {
    function updateTranscoderWithFees(address transcoder, uint256 fees, uint256 round) external;
    function setCurrentRoundTotalActiveStake() external;
    function getTotalBonded() external view returns (uint256);
    function isActiveTranscoder(address transcoder) external view returns (bool);
    function getTranscoderPoolSize() external view returns (uint256);
}

interface IMinter {
    function createReward(uint256 fracNum, uint256 fracDenom) external returns (uint256);
    function setCurrentRewardTokens() external;
    function depositETH() external payable returns (bool);
    function trustedWithdrawETH(address payable to, uint256 amount) external;
    function trustedTransferTokens(address to, uint256 amount) external;
}
